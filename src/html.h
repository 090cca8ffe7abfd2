/* SPDX-License-Identifier: MIT */
/*
 * HTML escaping, for the writers of HTML pages and mails (report.c, notify_msg.c): the five
 * markup characters become entities, every other byte stays as it is (what else a writer must
 * keep out, control characters or bytes that are not UTF-8, is its own rule). Pure functions;
 * any thread.
 */
#pragma once

#include <stdio.h>

/* The entity that stands for c in HTML text and in a quoted attribute value: "&amp;", "&lt;",
 * "&gt;", "&quot;", "&#39;" for & < > " '; NULL when c stands for itself. */
const char *html_entity(char c);

/* Writes s (NULL: nothing) to f with html_entity's characters replaced by their entities. Errors
 * are the stream's (ferror). */
void html_escape(FILE *f, const char *s);

/* SPDX-License-Identifier: MIT */
/*
 * HTML escaping (html.h).
 */
#include "html.h"

const char *html_entity(char c)
{
    switch (c) {
    case '&':
        return "&amp;";
    case '<':
        return "&lt;";
    case '>':
        return "&gt;";
    case '"':
        return "&quot;";
    case '\'':
        return "&#39;";
    default:
        return NULL;
    }
}

void html_escape(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        const char *entity = html_entity(*s);
        if (entity)
            fputs(entity, f);
        else
            fputc(*s, f);
    }
}

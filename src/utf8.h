/* SPDX-License-Identifier: MIT */
/*
 * UTF-8 well-formedness, for the writers of text others must decode (JSON documents, log lines):
 * names from a card may hold any bytes but '/' and NUL.
 */
#pragma once

#include <stddef.h>

/* Length (1-4) of the well-formed UTF-8 sequence at s, of which n >= 1 bytes may be read; 0 when
 * s does not start one (a stray continuation byte, an overlong form, a surrogate, a code point
 * above U+10FFFF, a sequence cut short by n). */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* SPDX-License-Identifier: MIT */
/*
 * libxml2 made ready for our parsers and writers (mhl.c, s3_proto.c): initialised once per
 * process, its own error printing silenced (errors reach callers as struct error, never as lines
 * on stderr). Any thread.
 */
#pragma once

/* Initialises libxml2 once per process (later calls skip that) and installs, for the calling
 * thread (libxml2's handler is per thread), an error handler that prints nothing. Call before
 * each parse or write. */
void xml_thread_setup(void);

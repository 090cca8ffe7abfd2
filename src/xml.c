/* SPDX-License-Identifier: MIT */
/* libxml2 made ready (xml.h). */
#include "xml.h"

#include <pthread.h>

#include <libxml/parser.h>

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init(void)
{
    xmlInitParser();
}

static void xml_quiet(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

void xml_thread_setup(void)
{
    pthread_once(&xml_once, xml_init);
    xmlSetGenericErrorFunc(NULL, xml_quiet);
}

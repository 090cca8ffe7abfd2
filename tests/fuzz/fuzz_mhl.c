/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the ASC MHL chain parser (a chain file comes from a share, so anyone with
 * write access to it controls it): a chain that parses must write back and parse again to the
 * same generations, so parse and write cannot disagree.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mhl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct buf {
    char *data;
    size_t len;
};

static int buf_write(void *userdata, const void *p, size_t len)
{
    struct buf *b = userdata;
    char *n = realloc(b->data, b->len + len);
    if (!n)
        return -12;
    memcpy(n + b->len, p, len);
    b->data = n;
    b->len += len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mhl_chain c;
    struct error err;
    if (mhl_chain_parse((const char *)data, size, &c, &err) != 0)
        return 0;
    struct buf b = {0};
    if (mhl_chain_write(&c, (struct mhl_sink){buf_write, &b}, &err) != 0)
        abort();
    struct mhl_chain again;
    if (mhl_chain_parse(b.data, b.len, &again, &err) != 0) {
        fprintf(stderr, "written chain does not parse: %s\n", err.msg);
        abort();
    }
    if (again.n != c.n)
        abort();
    for (size_t i = 0; i < c.n; i++)
        if (again.gens[i].seq != c.gens[i].seq || strcmp(again.gens[i].name, c.gens[i].name) != 0 ||
            strcmp(again.gens[i].c4, c.gens[i].c4) != 0)
            abort();
    mhl_chain_free(&again);
    mhl_chain_free(&c);
    free(b.data);
    return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * Time for waits and durations: the monotonic clock, never the wall clock (a Raspberry Pi sets
 * its wall clock by NTP after boot, which would stretch or cut every wait in progress).
 */
#pragma once

#include <pthread.h>
#include <time.h>

/* Seconds on the monotonic clock. Any thread. */
double monotime_now(void);

/* The absolute time t (seconds on the monotonic clock) for pthread_cond_timedwait on a condition
 * made by monotime_cond_init. */
struct timespec monotime_timespec(double t);

/* Initialises c to time its waits on the monotonic clock. */
void monotime_cond_init(pthread_cond_t *c);

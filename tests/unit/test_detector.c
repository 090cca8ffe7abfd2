/* SPDX-License-Identifier: MIT */
/* Unit tests for detector.c: which devices are cards, the new sd_card keys. The event handling
 * itself is tested with real loop devices in tests/integration/test_service.py. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "detector.h"

static struct config *parse(const char *yaml)
{
    struct config *cfg = NULL;
    struct error err = {0};
    int r = config_parse_buffer("config.yaml", yaml, strlen(yaml), &cfg, &err);
    if (r < 0)
        fail_msg("%s", err.msg);
    return cfg;
}

static void test_defaults(void **state)
{
    (void)state;
    struct config *cfg = NULL;
    assert_int_equal(config_default(&cfg, NULL), 0);
    assert_int_equal(cfg->sd_card.n_devices, 0);
    assert_null(cfg->sd_card.devices[0]);
    assert_int_equal(cfg->sd_card.n_ignore_devices, 0);
    assert_string_equal(cfg->sd_card.mount_base, "/run/snapsync/cards");
    assert_true(cfg->sd_card.unmount_when_done);
    assert_int_equal(cfg->sd_card.poll_interval, 2);
    /* removable, USB and MMC devices are cards; others are not */
    assert_true(detector_device_accepted(cfg, "sdb1", true, ""));
    assert_true(detector_device_accepted(cfg, "sdc", false, "usb"));
    assert_true(detector_device_accepted(cfg, "mmcblk0p1", false, "mmc"));
    assert_false(detector_device_accepted(cfg, "sda1", false, ""));
    assert_false(detector_device_accepted(cfg, "loop0", false, ""));
    assert_false(detector_device_accepted(cfg, "", true, "usb"));
    config_free(cfg);
}

static void test_patterns(void **state)
{
    (void)state;
    struct config *cfg = parse("sd_card:\n"
                               "  devices: [\"loop*\", vdb]\n"
                               "  ignore_devices: [\"sdb*\", loop7]\n"
                               "  mount_base: /media/snapsync\n"
                               "  unmount_when_done: false\n"
                               "  poll_interval: 0\n");
    assert_true(detector_device_accepted(cfg, "loop0", false, ""));
    assert_true(detector_device_accepted(cfg, "loop0p1", false, ""));
    assert_true(detector_device_accepted(cfg, "vdb", false, ""));
    assert_false(detector_device_accepted(cfg, "vdb1", false, ""));
    /* ignoring wins, even over removable and USB */
    assert_false(detector_device_accepted(cfg, "loop7", false, ""));
    assert_false(detector_device_accepted(cfg, "sdb1", true, "usb"));
    assert_true(detector_device_accepted(cfg, "sdc1", true, ""));
    assert_string_equal(cfg->sd_card.mount_base, "/media/snapsync");
    assert_false(cfg->sd_card.unmount_when_done);
    assert_int_equal(cfg->sd_card.poll_interval, 0);
    config_free(cfg);

    /* an old configuration without the new keys still loads */
    cfg = parse("sd_card:\n  auto_detect: true\n  mount_points: [/media]\n");
    assert_int_equal(cfg->sd_card.n_devices, 0);
    config_free(cfg);

    struct error err = {0};
    const char *bad = "sd_card:\n  poll_interval: -1\n";
    assert_int_equal(config_parse_buffer("c.yaml", bad, strlen(bad), &cfg, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "poll_interval"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

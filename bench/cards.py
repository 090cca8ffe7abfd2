# SPDX-License-Identifier: MIT
"""Shared by the SMB benchmarks (smb.py, deadsmb.py): the card they back up and the page-cache
drop before each run."""

import os
import shutil
import subprocess


def make_card(card, n_big, n_small):
    """n_big 24 MiB 'videos' and n_small 6 MiB 'raws' of random content under card, made once
    (card + '.done' marks a finished one, kept between runs)."""
    if os.path.exists(card + ".done"):
        return
    shutil.rmtree(card, ignore_errors=True)
    os.makedirs(f"{card}/DCIM/100CANON")
    sizes = [24 << 20] * n_big + [6 << 20] * n_small
    for i, size in enumerate(sizes):
        with open(f"{card}/DCIM/100CANON/IMG_{i:04d}.CR3", "wb") as f:
            f.write(os.urandom(size))
    open(card + ".done", "w").close()


def drop_caches():
    """So the card is read from disk each time (when /proc/sys/vm/drop_caches is writable)."""
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass

# SPDX-License-Identifier: MIT
"""Shared by the SMB benchmarks (smb.py, deadsmb.py): the card they back up and the page-cache
drop before each run."""

import os
import shutil
import subprocess


def make_card(card, n_big, n_small):
    """n_big 24 MiB 'videos' and n_small 6 MiB 'raws' of random content under card, made once
    (card + '.done' marks a finished one and records its plan: kept between runs of the same
    scale, made again for another)."""
    plan = f"{n_big} {n_small}\n"
    if os.path.exists(card + ".done"):
        with open(card + ".done") as f:
            if f.read() == plan:
                return
    shutil.rmtree(card, ignore_errors=True)
    os.makedirs(f"{card}/DCIM/100CANON")
    sizes = [24 << 20] * n_big + [6 << 20] * n_small
    for i, size in enumerate(sizes):
        with open(f"{card}/DCIM/100CANON/IMG_{i:04d}.CR3", "wb") as f:
            f.write(os.urandom(size))
    with open(card + ".done", "w") as f:
        f.write(plan)


def drop_caches():
    """So the card is read from disk each time (when /proc/sys/vm/drop_caches is writable)."""
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass

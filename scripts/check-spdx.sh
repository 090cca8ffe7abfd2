#!/bin/sh
# SPDX-License-Identifier: MIT
# Fails when a source file lacks `SPDX-License-Identifier: MIT` in its first comment (its first
# five lines: after a shebang, an XML declaration or a docstring's opening). Source files: C,
# Python, shell, JavaScript, CSS, HTML, CMake, awk, sed, YAML, XML, Dockerfiles, systemd units,
# debian/rules and the maintainer scripts. Not checked: build folders, test data (fuzz corpus,
# fixtures, the vendored Immich API spec), JSON (no comments) and the configuration template
# (config.yaml.example is `snapsync config --template`, byte for byte).
#   sh scripts/check-spdx.sh [SOURCE_DIR]
top=${1:-.}
# The files of the project: those git tracks in a checkout (not the untracked output of benches
# and builds beside them), else every file below top.
files() {
    if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$top" && git ls-files | sed 's|^|./|')
    else
        (cd "$top" && find . -type f)
    fi
}
missing=$(files | while read -r f; do
    case $f in
    ./build* | ./dist/* | ./.git/* | */node_modules/* | ./tests/fuzz/corpus/* | ./tests/fixtures/* | \
        ./tests/immich/*) continue ;;
    *.[ch] | *.py | *.sh | *.js | *.css | *.html | *.cmake | */CMakeLists.txt | \
        *.awk | *.sed | *.yaml | *.yml | *.xml | */Dockerfile | *.service | *.supp | \
        ./debian/rules | ./debian/*.postinst | ./debian/*.postrm | ./debian/*.prerm | \
        ./debian/*.preinst | ./completions/snapsync.bash) ;;
    *) continue ;;
    esac
    head -n 5 "$top/$f" | grep -q 'SPDX-License-Identifier: MIT' || echo "$f"
done | sort)
if [ -n "$missing" ]; then
    echo "no SPDX-License-Identifier: MIT in the first comment of:"
    echo "$missing"
    exit 1
fi
echo "every source file carries SPDX-License-Identifier: MIT"

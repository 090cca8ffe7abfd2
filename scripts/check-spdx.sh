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
missing=$(cd "$top" && find . \
    \( -path './build*' -o -path ./dist -o -path ./.git -o -path '*/node_modules' \
        -o -path ./tests/fuzz/corpus -o -path ./tests/fixtures -o -path ./tests/immich \) -prune -o \
    -type f \( -name '*.[ch]' -o -name '*.py' -o -name '*.sh' -o -name '*.js' -o -name '*.css' \
        -o -name '*.html' -o -name '*.cmake' -o -name CMakeLists.txt -o -name '*.awk' \
        -o -name '*.sed' -o -name '*.yaml' -o -name '*.yml' -o -name '*.xml' -o -name Dockerfile \
        -o -name '*.service' -o -name '*.supp' -o -path ./debian/rules \
        -o -path './debian/*.postinst' -o -path './debian/*.postrm' -o -path './debian/*.prerm' \
        -o -path './debian/*.preinst' -o -path ./completions/snapsync.bash \) -print |
    sort | while read -r f; do
        head -n 5 "$f" | grep -q 'SPDX-License-Identifier: MIT' || echo "$f"
    done)
if [ -n "$missing" ]; then
    echo "no SPDX-License-Identifier: MIT in the first comment of:"
    echo "$missing"
    exit 1
fi
echo "every source file carries SPDX-License-Identifier: MIT"

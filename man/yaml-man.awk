# SPDX-License-Identifier: MIT
# snapsync.yaml(5) from config.yaml.example, which is `snapsync config --template` byte for byte
# (tests/unit/test_config.c), so the page names every key of config.c's table with its comment
# and default. awk, not the binary: the page is made when cross-building too.
#   awk -v date=YYYY-MM-DD -f man/yaml-man.awk config.yaml.example >snapsync.yaml.5
function esc(s) {
    gsub(/\\/, "\\e", s)
    gsub(/-/, "\\-", s)
    if (s ~ /^[.']/) s = "\\&" s
    return s
}
function flush_comment(   i) {
    for (i = 1; i <= nc; i++) print esc(c[i])
    nc = 0
}
BEGIN {
    print ".\\\" SPDX-License-Identifier: MIT"
    print ".\\\" Generated from config.yaml.example by man/yaml-man.awk: edit config.c's key table."
    print ".TH SNAPSYNC.YAML 5 " date " SnapSync \"File Formats\""
    print ".SH NAME"
    print "snapsync.yaml \\- configuration file of snapsync(1)"
    print ".SH DESCRIPTION"
    print "The configuration of"
    print ".BR snapsync (1),"
    print "by default"
    print ".IR /etc/snapsync/config.yaml ."
    print ".B snapsync config \\-\\-template"
    print "prints it with every key at its default;"
    print ".B snapsync config"
    print "shows what is in effect."
    print ".PP"
    print ".nf"
    header = 1; nc = 0; key = ""
}
# a default ends at the first line that does not continue it
cont && !/^      / { print ""; cont = 0 }
# the file's own header: the description, line by line
header && /^#/ {
    line = $0; sub(/^# ?/, "", line)
    print esc(line)
    next
}
header && /^$/ { header = 0; print ".fi"; print ".SH KEYS"; next }
/^# / { line = $0; sub(/^# /, "", line); c[++nc] = line; next }
/^[a-z0-9_]+:/ {
    name = $0; sub(/:.*/, "", name)
    print ".SS " name
    flush_comment()
    next
}
/^  # / { line = $0; sub(/^  # /, "", line); c[++nc] = line; next }
# a nested section (notify: email:): its keys follow, 4 spaces in, named parent.key
/^  [a-z0-9_]+:$/ {
    parent = $0; sub(/^  /, "", parent); sub(/:$/, "", parent)
    print ".TP"
    print ".B " esc(parent)
    flush_comment()
    next
}
/^    # / { line = $0; sub(/^    # /, "", line); c[++nc] = line; next }
/^    [a-z0-9_]+:/ {
    key = $0; sub(/^    /, "", key); sub(/:.*/, "", key)
    value = $0; sub(/^    [a-z0-9_]+: ?/, "", value)
    print ".TP"
    print ".B " esc(parent "." key)
    flush_comment()
    print ".br"
    printf "Default: \\fB%s\\fP", esc(value)
    cont = 1
    next
}
/^  [a-z0-9_]+:/ {
    key = $0; sub(/^  /, "", key); sub(/:.*/, "", key)
    value = $0; sub(/^  [a-z0-9_]+: ?/, "", value)
    print ".TP"
    print ".B " esc(key)
    flush_comment()
    print ".br"
    printf "Default: \\fB%s\\fP", esc(value)
    cont = 1
    next
}
/^      / && cont { v = $0; sub(/^ +/, "", v); printf " \\fB%s\\fP", esc(v); next }
END {
    if (cont) print ""
    print ".SH FILES"
    print ".I /etc/snapsync/config.yaml"
    print "and, for secrets,"
    print ".I /etc/snapsync/.env"
    print "(mode 0600)."
    print ".SH SEE ALSO"
    print ".BR snapsync (1)"
}

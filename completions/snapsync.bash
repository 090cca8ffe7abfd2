# SPDX-License-Identifier: MIT
# bash completion for snapsync: the commands and options of src/cli.c (keep them in step).
# Installed as share/bash-completion/completions/snapsync.
_snapsync()
{
    local cur prev words cword
    _init_completion || return

    local commands="backup status sessions report config test-connection verify notify-test start web"
    local global="--config --help --version -c -h -V"

    # the command: the first word after the global options (and --config's FILE)
    local i cmd=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
        -c | --config) ((i++)) ;;
        -*) ;;
        *)
            cmd=${words[i]}
            break
            ;;
        esac
    done

    case $prev in
    -c | --config)
        _filedir '@(yaml|yml)'
        return
        ;;
    -n | --number | -p | --port | -s | --session | -r | --rate)
        return # a number
        ;;
    -f | --format)
        COMPREPLY=($(compgen -W "text json html" -- "$cur"))
        return
        ;;
    -o | --output)
        _filedir
        return
        ;;
    -S | --since)
        return # a date, YYYY-MM-DD
        ;;
    -d | --dest)
        COMPREPLY=($(compgen -W "unraid local immich" -- "$cur"))
        return
        ;;
    esac

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$global" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    local opts=""
    case $cmd in
    backup) opts="--dry-run --json --help -n -j -h" ;;
    status | test-connection | notify-test) opts="--json --help -j -h" ;;
    sessions) opts="-n --number --json --help -j -h" ;;
    report) opts="--format --output --help -f -o -h" ;;
    config) opts="--template --json --help -t -j -h" ;;
    verify) opts="--session --since --all --dest --json --rate --help -s -S -a -d -j -r -h" ;;
    start) opts="--help -h" ;;
    web) opts="--port --help -p -h" ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ $cmd == report ]]; then
        COMPREPLY=($(compgen -W "last" -- "$cur")) # SESSION: an id, or the newest
    elif [[ $cmd == backup ]]; then
        _filedir -d # PATH: a mounted card or any folder
    fi
} &&
    complete -F _snapsync snapsync

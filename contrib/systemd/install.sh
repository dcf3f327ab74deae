#!/bin/sh
# Install corescope's systemd units, env file, user and state directory.
#
#   contrib/systemd/install.sh [--root DIR]
#
# Run from the source tree, as root, after `cargo install --path . --root
# /usr/local` (the units run /usr/local/bin/corescope). --root DIR installs
# into DIR instead of / (a staging tree, an image); nothing outside DIR is
# touched then and systemd is not reloaded.
#
# What it does:
#   - /usr/lib/sysusers.d/corescope.conf and systemd-sysusers: the user
#     `corescope` (kept if it exists);
#   - /usr/lib/tmpfiles.d/corescope.conf and systemd-tmpfiles --create:
#     /var/lib/corescope, owned by corescope;
#   - /etc/corescope/corescope.env, only if it does not exist yet (an edited
#     file is never replaced; the shipped one is installed beside it as
#     corescope.env.new then);
#   - the services and timers into /etc/systemd/system;
#   - systemctl daemon-reload (only without --root).
# It enables nothing: edit the env file first, then enable the timers.
set -eu

root=/
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --root=*) root=${1#--root=}; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (usage: install.sh [--root DIR])" >&2; exit 2 ;;
    esac
done
src=$(cd "$(dirname "$0")" && pwd)
r=${root%/}

install -d "$r/usr/lib/sysusers.d" "$r/usr/lib/tmpfiles.d" "$r/etc/corescope" "$r/etc/systemd/system"
install -m 644 "$src/sysusers.d/corescope.conf" "$r/usr/lib/sysusers.d/corescope.conf"
install -m 644 "$src/tmpfiles.d/corescope.conf" "$r/usr/lib/tmpfiles.d/corescope.conf"
if [ -e "$r/etc/corescope/corescope.env" ]; then
    install -m 644 "$src/corescope.env" "$r/etc/corescope/corescope.env.new"
    echo "kept $r/etc/corescope/corescope.env; the shipped one is $r/etc/corescope/corescope.env.new"
else
    install -m 644 "$src/corescope.env" "$r/etc/corescope/corescope.env"
fi
for f in "$src"/corescope-*.service "$src"/corescope-*.timer; do
    install -m 644 "$f" "$r/etc/systemd/system/"
done

if [ "$root" = / ]; then
    systemd-sysusers /usr/lib/sysusers.d/corescope.conf
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/corescope.conf
    systemctl daemon-reload
else
    # With --root the file arguments are not looked up inside the root.
    systemd-sysusers --root="$root" "$r/usr/lib/sysusers.d/corescope.conf"
    systemd-tmpfiles --root="$root" --create "$r/usr/lib/tmpfiles.d/corescope.conf"
fi
echo "installed; now edit $r/etc/corescope/corescope.env (CORESCOPE_DB at least), then enable the timers"

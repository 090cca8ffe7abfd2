# SPDX-License-Identifier: MIT
# Turns config.yaml.example (= `snapsync config --template`) into /etc/snapsync/config.yaml for
# the service: the database and the local destination go where the unit lets the service write.
# Used by install.sh and debian/rules.
s#^\(  database_path:\).*#\1 /var/lib/snapsync/snapsync.db#
s#^\(  mount_point:\) ./snapsync-backup#\1 /var/lib/snapsync/backup#

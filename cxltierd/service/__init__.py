"""The service around the loop: the daemon's lifecycle, its clock, event sources, control socket, metrics server,
systemd notifications, and the snapshot it publishes."""

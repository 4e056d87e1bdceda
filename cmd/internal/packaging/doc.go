// Package packaging holds the test of the .deb packages that `make
// package` builds (.ci/package): their files, modes, systemd units and
// maintainer scripts, and, as root, an install, a run and a removal.
package packaging

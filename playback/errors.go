package playback

import "errors"

// ErrNotJoined: the directory holds no identity yet.
var ErrNotJoined = errors.New("playback: not joined to a CA yet: start with --join-token (sshward-ca join-token --playback NAME)")

// Package adminsock is the local admin socket of the sshward servers: a
// unix socket in the server's directory, mode 0600, that only the
// server's own user (and root) can open. sshward-ca serves its admin verbs
// on it, sshward-playback its online backup; the verbs find a running
// server through it and work offline when nobody answers.
package adminsock

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// Listen creates the socket at path with mode 0600, replacing a stale
// socket file left by a crash; what names the server in the refusal when
// another one answers on it.
func Listen(path, what string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s is in use: is another %s serving this directory?", path, what)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// Answers reports whether a server listens on the socket at path.
func Answers(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Client is an HTTP client whose every request goes to the socket at path
// (the URL's host is ignored); timeout 0 means none (a backup streams for
// as long as it takes; its context bounds it).
func Client(path string, timeout time.Duration) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &http.Client{Transport: tr, Timeout: timeout}
}

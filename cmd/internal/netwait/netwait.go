// Package netwait picks free loopback ports for the servers that
// sshward-demo and sshward-soak start, and waits for those servers to
// come up.
package netwait

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"
)

// FreeAddr returns want when it is free (a port of 0 always is: the
// address the system picked), else a free port on 127.0.0.1.
func FreeAddr(want string) (string, error) {
	if ln, err := net.Listen("tcp", want); err == nil {
		defer ln.Close()
		return ln.Addr().String(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// HTTPS waits, at most limit, for GET base/healthz to answer 200. It
// checks liveness only (any certificate): clients and agents verify the
// CA root by its fingerprint.
func HTTPS(ctx context.Context, base string, limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	err := Poll(ctx, limit, func() bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return fmt.Errorf("no answer on %s/healthz: %w", base, err)
	}
	return nil
}

// TCP waits, at most limit, for something to accept connections on addr.
func TCP(ctx context.Context, addr string, limit time.Duration) error {
	err := Poll(ctx, limit, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("nothing listens on %s: %w", addr, err)
	}
	return nil
}

// ErrTimeout is what Poll returns when its limit passed.
var ErrTimeout = fmt.Errorf("netwait: timed out")

// Poll calls cond every 100 ms until it holds, ctx ends or limit passes.
func Poll(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %v", ErrTimeout, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

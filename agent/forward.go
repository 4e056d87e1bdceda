package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Forwarding: direct-tcpip and tcpip-forward (RFC 4254 section 7) when the
// certificate has permit-port-forwarding, agent forwarding (OpenSSH
// PROTOCOL section 2.2 "auth-agent") with permit-agent-forwarding.

const (
	dialTimeout    = 10 * time.Second
	maxRemoteFwds  = 16 // tcpip-forward listeners per connection
	forwardRefusal = "certificate does not permit port forwarding (permit-port-forwarding)"
)

func (c *serverConn) directTCPIP(nch ssh.NewChannel) {
	if !c.g.permitPortFw {
		c.refuseRequest("direct-tcpip", forwardRefusal, "")
		_ = nch.Reject(ssh.Prohibited, "port forwarding is not permitted")
		return
	}
	t, err := parseDirectTCPIP(nch.ExtraData())
	if err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, "malformed request")
		return
	}
	target := net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
	ctx, cancel := context.WithTimeout(c.ctx, dialTimeout)
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		c.log.Info("agent: forward connect failed", "target", target, "err", err)
		_ = nch.Reject(ssh.ConnectionFailed, "connect failed")
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	c.auditForward("direct-tcpip " + target)
	proxy(c.ctx, ch, conn)
}

func (c *serverConn) auditForward(detail string) {
	g := c.g
	c.log.Info("agent: forward opened", "detail", detail)
	c.srv.audit(c.ctx, AuditEvent{Action: AuditForward, SessionID: c.id, Serial: g.cert.Serial,
		KeyID: g.cert.KeyId, Principal: g.login, Tier: g.tier, ClientAddr: g.clientAddr, Detail: detail})
}

// proxy copies both ways until both directions ended or ctx ends.
func proxy(ctx context.Context, ch ssh.Channel, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() {
		ch.Close()
		conn.Close()
	})
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(ch, conn)
		_ = ch.CloseWrite()
	})
	wg.Go(func() {
		_, _ = io.Copy(conn, ch)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	})
	wg.Wait()
	ch.Close()
	conn.Close()
}

// forwards are a connection's tcpip-forward listeners.
type forwards struct {
	mu     sync.Mutex // guards byKey and closed
	byKey  map[string]net.Listener
	closed bool
}

func fwdKey(addr string, port uint32) string { return addr + "\x00" + strconv.Itoa(int(port)) }

func (f *forwards) add(key string, ln net.Listener) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || len(f.byKey) >= maxRemoteFwds || f.byKey[key] != nil {
		return false
	}
	if f.byKey == nil {
		f.byKey = make(map[string]net.Listener)
	}
	f.byKey[key] = ln
	return true
}

func (f *forwards) remove(key string) net.Listener {
	f.mu.Lock()
	defer f.mu.Unlock()
	ln := f.byKey[key]
	delete(f.byKey, key)
	return ln
}

func (f *forwards) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for k, ln := range f.byKey {
		ln.Close()
		delete(f.byKey, k)
	}
}

// tcpipForward opens a remote forward. Like sshd with GatewayPorts no, it
// listens on loopback only, whatever address the client names, and only
// root may take a privileged port.
func (c *serverConn) tcpipForward(r *ssh.Request) {
	if !c.g.permitPortFw {
		c.refuseRequest("tcpip-forward", forwardRefusal, "")
		reply(r, false)
		return
	}
	f, err := parseTCPIPForward(r.Payload)
	if err != nil || (f.Port != 0 && f.Port < 1024 && c.g.user.UID != 0) {
		reply(r, false)
		return
	}
	host := "127.0.0.1"
	if f.Addr == "::1" {
		host = "::1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(f.Port))))
	if err != nil {
		c.log.Info("agent: remote forward listen failed", "err", err)
		reply(r, false)
		return
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	key := fwdKey(f.Addr, f.Port)
	if f.Port == 0 {
		key = fwdKey(f.Addr, port) // the client cancels with the port it was given
	}
	if !c.fwd.add(key, ln) {
		ln.Close()
		reply(r, false)
		return
	}
	if r.WantReply {
		var payload []byte
		if f.Port == 0 {
			payload = ssh.Marshal(struct{ Port uint32 }{port})
		}
		_ = r.Reply(true, payload)
	}
	c.auditForward(fmt.Sprintf("tcpip-forward %s:%d", host, port))
	c.wg.Go(func() { c.acceptForwarded(ln, f.Addr, port) })
}

func (c *serverConn) acceptForwarded(ln net.Listener, addr string, port uint32) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		orig := conn.RemoteAddr().(*net.TCPAddr)
		payload := ssh.Marshal(forwardTarget{Host: addr, Port: port, OriginHost: orig.IP.String(), OriginPort: uint32(orig.Port)})
		c.wg.Go(func() {
			ch, reqs, err := c.sconn.OpenChannel("forwarded-tcpip", payload)
			if err != nil {
				conn.Close()
				return
			}
			go ssh.DiscardRequests(reqs)
			proxy(c.ctx, ch, conn)
		})
	}
}

func (c *serverConn) cancelTCPIPForward(r *ssh.Request) {
	f, err := parseTCPIPForward(r.Payload)
	if err != nil {
		reply(r, false)
		return
	}
	ln := c.fwd.remove(fwdKey(f.Addr, f.Port))
	if ln != nil {
		ln.Close()
	}
	reply(r, ln != nil)
}

// listenAgent makes the SSH_AUTH_SOCK of a session with agent forwarding:
// a socket in a 0700 directory owned by the user, each connection to it
// relayed over an "auth-agent@openssh.com" channel to the client. stop
// closes it and removes the directory.
func (c *serverConn) listenAgent(ctx context.Context, u *User) (sock string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "sshward-agent-")
	if err != nil {
		return "", nil, fmt.Errorf("agent: agent forwarding: %w", err)
	}
	sock = filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err == nil {
		err = os.Chmod(sock, 0o600)
	}
	if err == nil && os.Geteuid() == 0 {
		if err = os.Lchown(sock, int(u.UID), int(u.GID)); err == nil {
			err = os.Lchown(dir, int(u.UID), int(u.GID))
		}
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("agent: agent forwarding: %w", err)
	}
	// Agent connections end with the session.
	pctx, pcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				ch, reqs, err := c.sconn.OpenChannel("auth-agent@openssh.com", nil)
				if err != nil {
					conn.Close()
					return
				}
				go ssh.DiscardRequests(reqs)
				proxy(pctx, ch, conn)
			})
		}
	})
	stop = func() {
		pcancel()
		ln.Close()
		wg.Wait()
		os.RemoveAll(dir)
	}
	return sock, stop, nil
}

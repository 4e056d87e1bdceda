package agent

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// The sftp subsystem is served by github.com/pkg/sftp inside the agent
// only when that runs with exactly the user's rights: the agent process
// already is the user. A root agent cannot drop privileges for one
// goroutine, so for any other user it runs OpenSSH's sftp-server as that
// user (Config.SFTPServerPath), like a command. Either way the requests are
// recorded as markers by the sniffer.

// sftpInProcess reports whether the in-process server is safe here.
func (s *session) sftpInProcess() bool {
	u := s.c.g.user
	return int(u.UID) == os.Geteuid() && int(u.GID) == os.Getegid()
}

// sniffedChannel is the channel as the SFTP server reads it: every byte
// from the client goes past the sniffer first.
type sniffedChannel struct {
	ssh.Channel
	sn *sftpSniffer
}

func (c sniffedChannel) Read(p []byte) (int, error) {
	n, err := c.Channel.Read(p)
	if n > 0 {
		c.sn.feed(p[:n])
	}
	return n, err
}

// serveSFTP runs pkg/sftp on the channel until the client ends it or the
// session is ended.
func (s *session) serveSFTP(req *ssh.Request, p plan, rec *sessionRecording) {
	rw := sniffedChannel{Channel: s.ch, sn: &sftpSniffer{emit: rec.marker}}
	srv, err := sftp.NewServer(rw, sftp.WithServerWorkingDirectory(s.c.g.user.Home))
	if err != nil {
		s.failStart(req, rec, err)
		return
	}
	s.mu.Lock()
	s.started, s.rec = true, rec
	s.mu.Unlock()
	reply(req, true)
	s.showUnrecorded()
	s.auditStart(p)
	go func() {
		defer close(s.finished)
		stop := context.AfterFunc(s.ctx, func() {
			s.tellEnd(context.Cause(s.ctx), nil, rec)
			srv.Close()
		})
		err := srv.Serve()
		stop()
		status := 0
		if err != nil && !errors.Is(err, io.EOF) {
			status = 1
		}
		s.report(exitInfo{status: &status}, rec)
	}()
}

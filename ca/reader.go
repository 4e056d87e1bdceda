package ca

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// readerTokenTTL bounds a reader token; it never outlives its login session.
const readerTokenTTL = time.Hour

// ErrScope marks a request made with a token whose scope does not allow it.
var ErrScope = fmt.Errorf("ca: the token's scope does not allow this request")

// ReaderToken exchanges a login session for a token that can only say who
// its holder is (scope api.ScopeReadRecordings): what readers hand to the
// playback server, so that a compromised playback server holds nothing
// that mints certificates, approves requests or administers the CA.
func (a *Authority) ReaderToken(ctx context.Context, sess *store.Session, clientAddr string) (*api.LoginResponse, error) {
	ev := store.AuditEvent{Type: "session.reader_token", Actor: sess.User, Subject: sess.User, ClientAddr: clientAddr}
	if sess.Scope != "" {
		err := refuse(api.CodeForbidden, http.StatusForbidden, ErrScope, "a reader token cannot make another token: use your login session (sshward login)")
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	now := a.cfg.Now()
	token, rs, err := a.newSession(sess.User, sess.Groups, sess.MFA, sess.Source, clientAddr, now)
	if err != nil {
		return nil, err
	}
	rs.Scope, rs.Parent = api.ScopeReadRecordings, sess.ID
	if exp := now.Add(readerTokenTTL); exp.Before(sess.ExpiresAt) {
		rs.ExpiresAt = exp.UTC()
	} else {
		rs.ExpiresAt = sess.ExpiresAt
	}
	ev.Outcome = "ok"
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		if err := tx.PutSession(rs); err != nil {
			return err
		}
		return a.appendAudit(tx, ev)
	})
	if err != nil {
		return nil, fmt.Errorf("ca: reader token for %q: %w", sess.User, err)
	}
	return &api.LoginResponse{Token: token, User: rs.User, Groups: rs.Groups, MFA: rs.MFA, ExpiresAt: rs.ExpiresAt}, nil
}

// CheckScope refuses (and audits) a request that a scoped session may not
// make. what names the request for the audit record.
func (a *Authority) CheckScope(ctx context.Context, sess *store.Session, what, clientAddr string) error {
	if sess.Scope == "" {
		return nil
	}
	err := refuse(api.CodeForbidden, http.StatusForbidden, ErrScope,
		"this token only reads recordings (scope %s): it cannot %s; use your login session", sess.Scope, what)
	a.auditRefusal(ctx, store.AuditEvent{Type: "session.scope", Actor: sess.User, Subject: sess.User, ClientAddr: clientAddr,
		Details: map[string]string{"scope": sess.Scope, "request": what}}, err)
	return err
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/server"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/cmd/internal/adminsock"
)

// admin is what the admin verbs need; a running CA serves it on its unix
// socket, a stopped one through the store file directly.
type admin interface {
	AddUser(ctx context.Context, req ca.AddUserRequest) (*ca.AddUserResult, error)
	ListUsers(ctx context.Context) ([]ca.UserInfo, error)
	RemoveUser(ctx context.Context, name string) error
	DisableUser(ctx context.Context, name, reason string) (*ca.DisableResult, error)
	EnableUser(ctx context.Context, name string) error
	SetPassword(ctx context.Context, name, password string) error
	NewJoinToken(ctx context.Context, req ca.JoinTokenRequest) (*ca.JoinTokenResult, error)
	Revoke(ctx context.Context, req ca.RevokeRequest) (*ca.RevokeResult, error)
	Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error)
	VerifyAudit(ctx context.Context) server.VerifyResult
	Sessions(ctx context.Context) ([]store.Session, error)
	// Backup writes a consistent snapshot of the store (backup.go).
	Backup(ctx context.Context, actor string, w io.Writer) (int64, error)
	// Review and SignOff are the access review (review.go).
	Review(ctx context.Context, since time.Time) ([]ca.ReviewLine, error)
	SignOff(ctx context.Context, s ca.ReviewSignOff, since time.Time) (*ca.ReviewSignOff, error)
	Close() error
}

// openAdmin prefers the running CA's socket and falls back to the store.
func openAdmin(ctx context.Context, l layout, passphrase []byte) (admin, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if adminsock.Answers(l.socket()) {
		return newSocketAdmin(l.socket()), nil
	}
	pol, err := loadPolicy(l.policy())
	if err != nil {
		return nil, err
	}
	db, err := openStore(ctx, l, nil, 2*time.Second)
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("the CA store %s is locked by a running sshward-ca whose admin socket %s does not answer: restart it", l.db(), l.socket())
	}
	if err != nil {
		return nil, err
	}
	var box *ca.SecretBox
	if len(passphrase) > 0 {
		// A wrong passphrase would seal secrets the CA cannot open: check it
		// against the host CA key first.
		if _, err := openPassphraseCheck(ctx, l, passphrase); err != nil {
			db.Close()
			return nil, errors.New("$SSHWARD_CA_PASSPHRASE does not open the CA keys: set the CA's passphrase (it encrypts TOTP secrets) or unset it")
		}
		if box, err = ca.NewSecretBox(ctx, db, passphrase); err != nil {
			db.Close()
			return nil, err
		}
	}
	a, err := ca.NewAdmin(ca.AdminConfig{Store: db, Policy: pol, Secrets: box})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &localAdmin{Admin: a, db: db}, nil
}

type localAdmin struct {
	*ca.Admin
	db *store.DB
}

func (l *localAdmin) RemoveUser(ctx context.Context, name string) error {
	return l.Admin.RemoveUser(ctx, name, "admin-offline")
}
func (l *localAdmin) DisableUser(ctx context.Context, name, reason string) (*ca.DisableResult, error) {
	return l.Admin.DisableUser(ctx, name, reason, "admin-offline")
}
func (l *localAdmin) EnableUser(ctx context.Context, name string) error {
	return l.Admin.EnableUser(ctx, name, "admin-offline")
}
func (l *localAdmin) SetPassword(ctx context.Context, name, pw string) error {
	return l.Admin.SetPassword(ctx, name, pw, "admin-offline")
}
func (l *localAdmin) VerifyAudit(ctx context.Context) server.VerifyResult {
	return server.VerifyResultOf(l.Admin.VerifyAudit(ctx))
}
func (l *localAdmin) Close() error { return l.db.Close() }

type socketAdmin struct{ hc *http.Client }

func newSocketAdmin(path string) *socketAdmin {
	return &socketAdmin{hc: adminsock.Client(path, 30*time.Second)}
}

func (s *socketAdmin) Close() error { return nil }

func (s *socketAdmin) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sshward-ca"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &api.Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = "the CA answered " + resp.Status
		}
		return e
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func (s *socketAdmin) AddUser(ctx context.Context, req ca.AddUserRequest) (*ca.AddUserResult, error) {
	var out ca.AddUserResult
	return &out, s.call(ctx, http.MethodPost, server.AdminUsers, req, &out)
}
func (s *socketAdmin) ListUsers(ctx context.Context) ([]ca.UserInfo, error) {
	var out []ca.UserInfo
	return out, s.call(ctx, http.MethodGet, server.AdminUsers, nil, &out)
}
func (s *socketAdmin) RemoveUser(ctx context.Context, name string) error {
	return s.call(ctx, http.MethodDelete, server.AdminUsers+"/"+url.PathEscape(name), nil, nil)
}
func (s *socketAdmin) DisableUser(ctx context.Context, name, reason string) (*ca.DisableResult, error) {
	var out ca.DisableResult
	return &out, s.call(ctx, http.MethodPost, server.AdminUsers+"/"+url.PathEscape(name)+"/disable", server.UserDisable{Reason: reason}, &out)
}
func (s *socketAdmin) EnableUser(ctx context.Context, name string) error {
	return s.call(ctx, http.MethodPost, server.AdminUsers+"/"+url.PathEscape(name)+"/enable", struct{}{}, nil)
}
func (s *socketAdmin) SetPassword(ctx context.Context, name, pw string) error {
	return s.call(ctx, http.MethodPut, server.AdminUsers+"/"+url.PathEscape(name)+"/password", server.PasswordChange{Password: pw}, nil)
}
func (s *socketAdmin) NewJoinToken(ctx context.Context, req ca.JoinTokenRequest) (*ca.JoinTokenResult, error) {
	var out ca.JoinTokenResult
	return &out, s.call(ctx, http.MethodPost, server.AdminJoinTokens, req, &out)
}
func (s *socketAdmin) Revoke(ctx context.Context, req ca.RevokeRequest) (*ca.RevokeResult, error) {
	var out ca.RevokeResult
	return &out, s.call(ctx, http.MethodPost, server.AdminRevoke, req, &out)
}
func (s *socketAdmin) Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	q := url.Values{}
	q.Set("after", strconv.FormatUint(f.AfterSeq, 10))
	q.Set("limit", strconv.Itoa(f.Limit))
	q.Set("type", f.Type)
	var out []store.AuditEvent
	return out, s.call(ctx, http.MethodGet, server.AdminAudit+"?"+q.Encode(), nil, &out)
}
func (s *socketAdmin) VerifyAudit(ctx context.Context) server.VerifyResult {
	var out server.VerifyResult
	if err := s.call(ctx, http.MethodGet, server.AdminAuditVerify, nil, &out); err != nil {
		return server.VerifyResult{Error: err.Error()}
	}
	return out
}
func (s *socketAdmin) Sessions(ctx context.Context) ([]store.Session, error) {
	var out []store.Session
	return out, s.call(ctx, http.MethodGet, server.AdminSessions, nil, &out)
}

// Backup streams the running CA's store snapshot. No overall timeout (a
// large store takes its time); ctx ends it.
func (s *socketAdmin) Backup(ctx context.Context, _ string, w io.Writer) (int64, error) {
	hc := &http.Client{Transport: s.hc.Transport}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sshward-ca"+server.AdminBackup, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		e := &api.Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = "the CA answered " + resp.Status
		}
		return 0, e
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("admin socket: backup cut after %d bytes: %w", n, err)
	}
	return n, nil
}

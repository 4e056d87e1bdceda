package oidcflow

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

const (
	// authTimeout bounds the wait for the browser when ctx has no deadline.
	authTimeout = 5 * time.Minute
	// shutdownTimeout lets the callback page reach the browser before the
	// listener goes away.
	shutdownTimeout = 2 * time.Second
	callbackPath    = "/callback"
)

// AuthCode runs the authorization code flow with PKCE (RFC 7636, S256), a
// state and a nonce, for a native app as RFC 8252 describes: it listens on
// loopback, sends the user's browser to the provider with
// redirect_uri=http://127.0.0.1:PORT/callback, takes the one callback that
// carries the right state, closes the listener, redeems the code and returns
// the ID token (already checked for signature, audience, expiry and nonce).
func AuthCode(ctx context.Context, cfg Config) (rawIDToken string, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, authTimeout)
		defer cancel()
	}
	s, err := newSession(ctx, cfg)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return "", fmt.Errorf("oidcflow: listen for the redirect: %w", err)
	}
	defer ln.Close()
	s.oauth.RedirectURL = redirectURL(s.cfg.ListenAddr, ln.Addr())

	state, nonce, verifier := rand.Text(), rand.Text(), oauth2.GenerateVerifier()
	authURL := s.oauth.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))

	cb := &callback{state: state, done: make(chan callbackResult, 1)}
	srv := &http.Server{Handler: cb, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // returns ErrServerClosed after Shutdown below
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}()

	s.printf("To log in, open this URL in a browser:\n\n  %s\n\n", authURL)
	if s.cfg.OpenBrowser != nil {
		if err := s.cfg.OpenBrowser(authURL); err != nil {
			s.printf("Could not open a browser (%v): open the URL above yourself.\n", err)
		}
	}
	s.printf("Waiting for the browser to come back to %s ...\n", s.oauth.RedirectURL)
	s.waiting()

	var res callbackResult
	select {
	case res = <-cb.done:
	case <-ctx.Done():
		return "", fmt.Errorf("oidcflow: wait for the browser: %w", context.Cause(ctx))
	}
	if res.err != nil {
		return "", res.err
	}
	tok, err := s.oauth.Exchange(s.httpContext(ctx), res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return "", fmt.Errorf("oidcflow: redeem the code: %w", err)
	}
	return s.idToken(ctx, tok, nonce)
}

// redirectURL keeps the host the user configured (a provider compares the
// string, so "localhost" and "127.0.0.1" differ) with the port actually bound.
func redirectURL(listenAddr string, bound net.Addr) string {
	host, _, _ := net.SplitHostPort(listenAddr)
	if host == "" {
		host = "127.0.0.1"
	}
	_, port, _ := net.SplitHostPort(bound.String())
	return "http://" + net.JoinHostPort(host, port) + callbackPath
}

type callbackResult struct {
	code string
	err  error
}

// callback serves the redirect URI. Only a request with the right state
// counts: anything else on loopback may be another local process guessing,
// and must neither end nor steer the login (RFC 6749 §10.12).
type callback struct {
	state string
	done  chan callbackResult // buffered 1; receives the one result

	mu      sync.Mutex // guards the field below
	handled bool
}

func (c *callback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if r.URL.Path != callbackPath {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if !equalSecret(q.Get("state"), c.state) {
		page(w, http.StatusBadRequest, "This is not the login sshward is waiting for. Start again from the terminal.")
		return
	}
	c.mu.Lock()
	first := !c.handled
	c.handled = true
	c.mu.Unlock()
	if !first {
		page(w, http.StatusGone, "This login is already complete. You can close this window.")
		return
	}
	var res callbackResult
	switch {
	case q.Get("error") != "":
		res.err = &AuthError{Code: q.Get("error"), Description: q.Get("error_description")}
		page(w, http.StatusOK, "Login failed: "+res.err.Error()+". Return to the terminal.")
	case q.Get("code") == "":
		res.err = errors.New("oidcflow: provider redirected without a code")
		page(w, http.StatusBadRequest, "Login failed: the provider sent no code. Return to the terminal.")
	default:
		res.code = q.Get("code")
		page(w, http.StatusOK, "Login complete. You can close this window and return to the terminal.")
	}
	c.done <- res
}

func page(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "<!doctype html><title>sshward login</title><p>%s</p>\n", html.EscapeString(msg))
}

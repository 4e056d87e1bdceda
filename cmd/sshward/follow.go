package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"
)

// Following a live session across a lost connection (issue 9, "Live follow
// says why it stopped").
//
// A followed stream ends cleanly when the session does, but also when the
// playback server shuts down (it ends its handlers) and with an error when
// it dies. followBody tells them apart by asking the server whether the
// session is finished and every byte of it arrived; if not, it says the
// connection was lost, reconnects with ?offset= set to the bytes it has
// (the server answers X-Sshward-Offset; an older server sends from the
// start and followBody skips what it has), and the reader above sees one
// unbroken stream: no byte twice, none missing.

// reconnectFor bounds one outage; backoff grows from reconnectMin to
// reconnectMax between attempts.
const (
	reconnectFor = 5 * time.Minute
	reconnectMin = 200 * time.Millisecond
	reconnectMax = 5 * time.Second
)

// followBody is a live cast that survives lost connections.
type followBody struct {
	ctx  context.Context
	pc   *playbackClient
	id   string
	body io.ReadCloser
	off  int64 // bytes handed to the reader: where a reconnect resumes
	// say writes a line for the viewer (stderr).
	say func(string)
	// sleep waits between attempts (tests may shorten it).
	sleep func(context.Context, time.Duration) error
}

func (f *followBody) Read(p []byte) (int, error) {
	for {
		{
			n, err := f.body.Read(p)
			f.off += int64(n)
			if err == nil || n > 0 {
				if err != nil && err != io.EOF {
					// Deliver n now; the error comes back on the next Read.
					f.body.Close()
					f.body = errBody{err}
				}
				return n, nil
			}
			f.body.Close()
			f.body = nil
			if err == io.EOF && f.ended() {
				return 0, io.EOF
			}
			if ctxErr := f.ctx.Err(); ctxErr != nil {
				return 0, ctxErr
			}
			reason := "the server ended the stream"
			if err != io.EOF {
				reason = err.Error()
			}
			f.say(fmt.Sprintf("connection to the playback server lost (%s), reconnecting…", reason))
			if err := f.reconnect(); err != nil {
				return 0, err
			}
			f.say(fmt.Sprintf("reconnected, resuming at byte %d", f.off))
		}
	}
}

func (f *followBody) Close() error {
	if f.body != nil {
		return f.body.Close()
	}
	return nil
}

// ended reports whether the session is finished and every byte of it was
// read (false when the server cannot say: reconnecting finds out).
func (f *followBody) ended() bool {
	var sum sessionSummary
	if err := f.pc.getJSON(f.ctx, "/api/sessions/"+url.PathEscape(f.id), nil, &sum); err != nil {
		return false
	}
	return !sum.Live && f.off >= sum.Bytes
}

// reconnect opens the cast again from f.off, retrying with backoff while
// the server is away; a refusal (401, 403, 404) ends the follow.
func (f *followBody) reconnect() error {
	deadline := time.Now().Add(reconnectFor)
	wait := reconnectMin
	for {
		if err := f.sleep(f.ctx, wait); err != nil {
			return err
		}
		body, err := f.open(f.off)
		if err == nil {
			f.body = body
			return nil
		}
		var refused *refusal
		if errors.As(err, &refused) && refused.status < 500 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lost the connection to the playback server for %s (%v): the session goes on being recorded; run sshward play %s again", reconnectFor, err, f.id)
		}
		wait = min(2*wait, reconnectMax)
	}
}

// open requests the live cast from byte off on.
func (f *followBody) open(off int64) (io.ReadCloser, error) {
	q := url.Values{"follow": {"1"}}
	if off > 0 {
		q.Set("offset", strconv.FormatInt(off, 10))
	}
	resp, err := f.pc.do(f.ctx, "/api/sessions/"+url.PathEscape(f.id)+"/cast", q, "application/x-asciicast")
	if err != nil {
		return nil, err
	}
	if got := resp.Header.Get("X-Sshward-Offset"); off > 0 && got != strconv.FormatInt(off, 10) {
		// A server from before ?offset=: it starts over; skip what we have.
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("resume at byte %d: %w", off, err)
		}
	}
	return resp.Body, nil
}

// errBody returns err once its bytes were delivered.
type errBody struct{ err error }

func (e errBody) Read([]byte) (int, error) { return 0, e.err }
func (e errBody) Close() error             { return nil }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// refusal is an HTTP answer that is not 2xx, with its status.
type refusal struct {
	status int
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/hostauth"
)

// WatchRequest opens a revocation stream (api.PathHostRevocationsWatch).
type WatchRequest struct {
	// Tier is the host's tier, or api.HostsScope for a playback server.
	Tier string
	// Since is the last log position seen (0: send the whole list first).
	Since uint64
	// Cert and Signer sign the request (hosts). Nil for a playback server,
	// which authenticates with the TLS client certificate of its transport.
	Cert   *ssh.Certificate
	Signer ssh.Signer
}

// ErrStreamSilent ends a watch whose stream sent nothing for three
// heartbeat intervals: the connection is taken for dead.
var ErrStreamSilent = errors.New("client: revocation stream silent for three heartbeats")

// defaultWatchIdle bounds the wait for the first line (the hello).
const defaultWatchIdle = 30 * time.Second

// WatchRevocations opens the revocation stream and calls fn with each
// event until ctx ends, the stream breaks or goes silent, or fn returns an
// error; it always returns a non-nil error (ctx's when it ended). The
// caller reconnects with the Seq of the last event it applied.
func (c *Client) WatchRevocations(ctx context.Context, req WatchRequest, fn func(api.RevocationEvent) error) error {
	q := url.Values{}
	q.Set("tier", req.Tier)
	q.Set("since", strconv.FormatUint(req.Since, 10))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The watchdog ends a stream that stops talking, including a response
	// that never starts.
	idle := defaultWatchIdle
	watchdog := time.AfterFunc(idle, func() { cancel(ErrStreamSilent) })
	defer watchdog.Stop()
	resp, ep, err := c.openWatch(ctx, q, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// A stream that breaks marks its replica down, so the caller's
	// reconnect goes to another one (a CA killed mid-stream).
	failed := func(err error) error {
		if ctx.Err() == nil || errors.Is(context.Cause(ctx), ErrStreamSilent) {
			c.eps.fail(ep, err)
		}
		return err
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := readLine(br, api.MaxRevocationEventBytes)
		if err != nil {
			return failed(c.watchErr(ctx, err))
		}
		watchdog.Reset(idle)
		ev, err := api.DecodeRevocationEvent(line)
		if err != nil {
			return fmt.Errorf("client: watch revocations: %w", err)
		}
		if ev.Type == api.EventHello && ev.Heartbeat > 0 {
			idle = 3 * time.Duration(ev.Heartbeat)
			watchdog.Reset(idle)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// openWatch connects the stream to the first replica that answers 200 (a
// GET: safe to send to each in turn).
func (c *Client) openWatch(ctx context.Context, q url.Values, req WatchRequest) (*http.Response, int, error) {
	order, list := c.eps.snapshot()
	var rerr replicaErr
	for _, i := range order {
		ep := list[i]
		hr, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.base+api.PathHostRevocationsWatch+"?"+q.Encode(), nil)
		if err != nil {
			return nil, 0, fmt.Errorf("client: watch revocations: %w", err)
		}
		hr.Header.Set("Accept", "application/x-ndjson")
		if req.Cert != nil {
			if err := hostauth.Sign(hr, nil, req.Cert, req.Signer, c.cfg.Now(), rand.Reader); err != nil {
				return nil, 0, fmt.Errorf("client: sign request: %w", err)
			}
		}
		resp, err := ep.hc.Do(hr)
		if err != nil {
			err = c.watchErr(ctx, err)
			if ctx.Err() != nil || len(order) == 1 {
				return nil, 0, err
			}
			c.eps.fail(i, err)
			rerr.urls, rerr.errs = append(rerr.urls, ep.base), append(rerr.errs, err)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			err := decodeError(resp, data)
			if retryableStatus(resp.StatusCode) && len(order) > 1 {
				c.eps.fail(i, err)
				rerr.urls, rerr.errs = append(rerr.urls, ep.base), append(rerr.errs, err)
				continue
			}
			return nil, 0, err
		}
		c.eps.good(i)
		return resp, i, nil
	}
	return nil, 0, fmt.Errorf("client: watch revocations: %w", &rerr)
}

func (c *Client) watchErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return fmt.Errorf("client: watch revocations: %w", err)
}

// readLine reads one newline-terminated line of at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > max {
			return nil, errors.New("line too long")
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// decodeError turns a non-2xx answer into an *api.Error.
func decodeError(resp *http.Response, data []byte) error {
	apiErr := &api.Error{Status: resp.StatusCode}
	if json.Unmarshal(data, apiErr) != nil || apiErr.Message == "" {
		apiErr.Code = api.CodeInternal
		apiErr.Message = fmt.Sprintf("the server answered %s", resp.Status)
	}
	return apiErr
}

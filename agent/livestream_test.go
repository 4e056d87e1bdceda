package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/web/webtest"
)

// TestLiveStreamingBeyondWorkers: 200 sessions stay open on one agent at
// once, more than ten times the shipper's workers. Every one of them is
// listed live by the real playback server with its output streamed, and a
// short session that ends in the middle of them is listed finished (and
// complete) while all 200 are still running. Then they all end and every
// recording arrives whole. The shipper used to give each live recording a
// worker until it ended: 16 of the 200 were visible and the short session
// waited for a long one to end.
func TestLiveStreamingBeyondWorkers(t *testing.T) {
	const conns, perConn = 20, 10 // 200 sessions: MaxSessions is 10 per connection
	const live = conns * perConn
	raiseNoFile(t, 4*live)
	stack := webtest.New(t)
	a := startRealAgent(t, stack.CA, agentOpts{tier: api.TierStaging, cfg: func(c *Config) {
		c.Playback = &PlaybackConfig{URL: stack.URL, RootPEM: stack.CA.RootPEM}
		c.HostName = "localhost" // a name its host certificate holds: the playback server checks
	}})
	login := currentUser(t)
	now := time.Now()
	k := mint(t, t.TempDir(), stack.CA.UserCAs[api.TierStaging], ssh.Certificate{Serial: 4242, KeyId: "case live streaming",
		ValidPrincipals: []string{login}, ValidAfter: uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(30 * time.Minute).Unix()), Permissions: ssh.Permissions{Extensions: stagingExt()}}, nil)
	kc := &fakeCA{hostCA: stack.CA.HostCA}

	// Each long session prints its number and waits for its stdin to close.
	var stdins []io.WriteCloser
	var wg sync.WaitGroup
	errs := make(chan error, live+1)
	for c := range conns {
		client, err := goSSHDial(t, kc, a, k, login, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", c, err)
		}
		t.Cleanup(func() { client.Close() })
		for i := range perConn {
			n := c*perConn + i
			s, err := client.NewSession()
			if err != nil {
				t.Fatalf("session %d: %v", n, err)
			}
			in, err := s.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			s.Stdout = &out
			if err := s.Start(fmt.Sprintf("echo long-%03d-started; cat >/dev/null; echo long-%03d-done", n, n)); err != nil {
				t.Fatalf("session %d: %v", n, err)
			}
			stdins = append(stdins, in)
			wg.Go(func() {
				if err := s.Wait(); err != nil || !strings.Contains(out.String(), fmt.Sprintf("long-%03d-done", n)) {
					errs <- fmt.Errorf("long session %d: %v, output %q", n, err, out.String())
				}
			})
		}
	}

	// All 200 are listed live, each with its first line streamed.
	list := func() map[string]playback.SessionSummary {
		var out struct {
			Sessions []playback.SessionSummary `json:"sessions"`
		}
		if err := getAuditor(stack, "/api/sessions?limit=1000", &out); err != nil {
			t.Fatal(err)
		}
		m := make(map[string]playback.SessionSummary, len(out.Sessions))
		for _, s := range out.Sessions {
			m[s.Command] = s
		}
		return m
	}
	longCommand := func(n int) string {
		return fmt.Sprintf("echo long-%03d-started; cat >/dev/null; echo long-%03d-done", n, n)
	}
	streamed := func(sums map[string]playback.SessionSummary) (listed, withOutput int) {
		for n := range live {
			s, ok := sums[longCommand(n)]
			if !ok || !s.Live {
				continue
			}
			listed++
			if s.Bytes > 0 {
				withOutput++
			}
		}
		return listed, withOutput
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		listed, withOutput := streamed(list())
		if listed == live && withOutput == live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sessions listed live, %d with output; agent log:\n%s", listed, live, withOutput, tail(a.logs.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The cast of a late one holds its output: streamed, not only started.
	sums := list()
	lastID := sums[longCommand(live-1)].ID
	waitCastHas(t, stack, lastID, fmt.Sprintf("long-%03d-started", live-1))

	// A short session ends in the middle of them: listed finished while
	// every long one is still live.
	client, err := goSSHDial(t, kc, a, k, login, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	const short = "echo short-session-output"
	if out, err := s.Output(short); err != nil || string(out) != "short-session-output\n" {
		t.Fatalf("short session: %v %q", err, out)
	}
	ended := time.Now()
	var delay time.Duration
	for {
		sums := list()
		if s, ok := sums[short]; ok && !s.Live && s.End != nil && s.Complete {
			delay = time.Since(ended)
			listed, _ := streamed(sums)
			if listed != live {
				t.Fatalf("when the short session was listed finished, %d of %d long ones were listed live", listed, live)
			}
			break
		}
		if time.Since(ended) > 60*time.Second {
			t.Fatalf("the short session is not listed finished a minute after it ended: %+v", sums[short])
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("short session listed finished %s after it ended, with %d sessions live on the agent", delay.Round(time.Millisecond), live)

	// All end; every recording arrives complete with its last line.
	for _, in := range stdins {
		in.Close()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		sums := list()
		done := 0
		for n := range live {
			if s, ok := sums[longCommand(n)]; ok && !s.Live && s.Complete {
				done++
			}
		}
		if done == live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d long sessions listed finished and complete", done, live)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitCastHas(t, stack, lastID, fmt.Sprintf("long-%03d-done", live-1))
}

// getAuditor GETs path from the playback server with the auditor's reader
// token and decodes the JSON answer.
func getAuditor(stack *webtest.Stack, path string, out any) error {
	req, err := http.NewRequest(http.MethodGet, stack.URL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+stack.AuditorToken)
	resp, err := stack.HTTPClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return json.Unmarshal(body, out)
}

// waitCastHas waits until the cast the playback server serves for id holds
// want.
func waitCastHas(t *testing.T, stack *webtest.Stack, id, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequest(http.MethodGet, stack.URL+"/api/sessions/"+id+"/cast", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+stack.AuditorToken)
		resp, err := stack.HTTPClient().Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cast of %s never held %q", id, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

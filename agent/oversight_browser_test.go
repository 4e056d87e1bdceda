package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/web/webtest"
)

// TestAuditorFollowsAndTerminatesInBrowser (issue 13 §1), every part real:
// the CA and the playback server over HTTPS, a real agent shipping to it,
// stock OpenSSH ssh in a PTY as the user, headless Chromium as the auditor.
// The auditor opens the live session, sees a line the user types appear
// (the DOM is polled, bounded; the time it took is logged, not asserted),
// and ends the session from the page with a reason. The user's ssh
// terminal prints who ended it and why; the CA's audit chain has the
// termination; the finished recording carries the reason as its end
// reason and a marker.
func TestAuditorFollowsAndTerminatesInBrowser(t *testing.T) {
	catest.NeedOpenSSH(t)
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatalf("/usr/bin/chromium is missing: install the chromium package (apt-get install -y chromium)")
	}
	stack := webtest.New(t)
	a := startRealAgent(t, stack.CA, agentOpts{tier: api.TierStaging, cfg: func(c *Config) {
		c.Playback = &PlaybackConfig{URL: stack.URL, RootPEM: stack.CA.RootPEM}
		c.HostName = "localhost" // a name its host certificate holds: the playback server checks
	}})
	login := currentUser(t)
	c := realSSHClient(t, stack.CA, a)
	now := time.Now()
	k := mint(t, c.home, stack.CA.UserCAs[api.TierStaging], ssh.Certificate{Serial: 4343, KeyId: "case browser terminate",
		ValidPrincipals: []string{login}, ValidAfter: uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(30 * time.Minute).Unix()), Permissions: ssh.Permissions{Extensions: stagingExt()}}, nil)

	tm := c.terminal(t, k, login, "")
	tm.typeText("echo first-$((6*7))\r")
	tm.waitFor("first-42")
	id := fmt.Sprint(a.logs.find(t, map[string]string{"msg": "agent: session started", "key_id": k.cert.KeyId})["session_id"])

	b := newAgentBrowser(t)
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(b, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	run("log in", chromedp.Navigate(stack.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#login-user"), webtest.Auditor),
		chromedp.SendKeys(chromedp.CSS("#login-password"), webtest.Password),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("tr.session-row")))
	run("open the live session", chromedp.Navigate(stack.URL+"/session/"+id))
	waitJS(t, b, screenHas("first-42"), 30*time.Second)

	typed := time.Now()
	tm.typeText("echo second-$((6*7))\r")
	waitJS(t, b, screenHas("second-42"), 30*time.Second)
	t.Logf("a typed line reached the auditor's screen in %s", time.Since(typed).Round(time.Millisecond))

	const reason = "INC-99 stop this now"
	run("terminate", chromedp.WaitVisible(chromedp.CSS("#terminate")),
		chromedp.SendKeys(chromedp.CSS("#terminate-reason"), reason),
		chromedp.Click(chromedp.CSS("#terminate-submit")))
	waitJS(t, b, `document.getElementById("terminate-result").textContent.includes("Terminated by `+webtest.Auditor+`")`, 30*time.Second)

	tm.wait()
	// The page's command timeline (issue 13 §3) has what the user ran,
	// read after the prompt (this tier does not record input).
	waitJS(t, b, `document.getElementById("commands").textContent.includes("echo second-$((6*7))")`, 30*time.Second)
	want := "sshward: session ended: terminated by " + webtest.Auditor + ": " + reason
	if !strings.Contains(tm.String(), want) {
		t.Fatalf("the user's terminal did not show %q:\n%s", want, tm.String())
	}
	evs, err := stack.CA.Store.Audit(context.Background(), store.AuditFilter{Type: api.EventSessionTerminate})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Actor != webtest.Auditor || evs[0].Subject != id || evs[0].Reason != reason || evs[0].Outcome != "ok" {
		t.Fatalf("CA audit of the termination: %+v", evs)
	}
	// The recording, as playback holds it once finished.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var d playback.SessionDetail
		if err := getAuditor(stack, "/api/sessions/"+id, &d); err == nil && !d.Live {
			if d.Metadata.EndReason != "terminated by "+webtest.Auditor+": "+reason {
				t.Errorf("recording end reason %q", d.Metadata.EndReason)
			}
			found := false
			for _, m := range d.Markers {
				found = found || strings.Contains(m.Label, reason)
			}
			if !found {
				t.Errorf("no marker with the reason: %+v", d.Markers)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recording of %s did not finish at playback", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func screenHas(s string) string {
	return `Array.from(document.querySelectorAll("pre.ap-term-text > span.ap-line")).map(l => l.textContent).join("\n").includes(` +
		fmt.Sprintf("%q", s) + `)`
}

// waitJS polls js in the page until it is true (bounded).
func waitJS(t *testing.T, ctx context.Context, js string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err == nil && ok {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	status, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("status") || {}).textContent || ""`))
	t.Fatalf("the page never had %s (status %q)", js, status)
}

// newAgentBrowser starts headless Chromium as the playback web tests do
// (NOTES.md "Web player and browser tests") and closes it with the test.
func newAgentBrowser(t *testing.T) context.Context {
	t.Helper()
	tmp, err := os.MkdirTemp("", "sshward-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath("/usr/bin/chromium"), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.IgnoreCertErrors,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.Env("TMPDIR="+tmp))
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancel(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// TestFlaggedListedAtPlayback: a flagged session's recording reaches the
// playback server with its flags in the signed metadata, and the list's
// flagged filter (sshward sessions --flagged, the web UI's "flagged")
// returns it and not a quiet one.
func TestFlaggedListedAtPlayback(t *testing.T) {
	catest.NeedOpenSSH(t)
	stack := webtest.New(t)
	a := startRealAgent(t, stack.CA, agentOpts{tier: api.TierStaging, cfg: func(c *Config) {
		c.Playback = &PlaybackConfig{URL: stack.URL, RootPEM: stack.CA.RootPEM}
		c.HostName = "localhost"
	}})
	login := currentUser(t)
	c := realSSHClient(t, stack.CA, a)
	now := time.Now()
	k := mint(t, c.home, stack.CA.UserCAs[api.TierStaging], ssh.Certificate{Serial: 4444, KeyId: "case flagged list",
		ValidPrincipals: []string{login}, ValidAfter: uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(30 * time.Minute).Unix()), Permissions: ssh.Permissions{Extensions: stagingExt()}}, nil)
	if out, errOut, err := c.run(k, login, nil, "echo 'DROP TABLE customers;' >/dev/null; echo ran"); err != nil || out != "ran\n" {
		t.Fatalf("a flag-only rule must not block: %v %q %q", err, out, errOut)
	}
	if _, _, err := c.run(k, login, nil, "echo quiet"); err != nil {
		t.Fatal(err)
	}
	// A live session that raised a flag is listed flagged while it runs
	// (its markers say so; its metadata will at the end).
	liveK := mint(t, c.home, stack.CA.UserCAs[api.TierStaging], ssh.Certificate{Serial: 4445, KeyId: "case flagged live",
		ValidPrincipals: []string{login}, ValidAfter: uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(30 * time.Minute).Unix()), Permissions: ssh.Permissions{Extensions: stagingExt()}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	liveCmd := exec.CommandContext(ctx, "ssh", append(c.args(liveK, login), "cat /etc/sudoers >/dev/null 2>&1; echo live-started; sleep 60")...)
	liveCmd.Env = c.env()
	if err := liveCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer liveCmd.Wait()
	deadline0 := time.Now().Add(30 * time.Second)
	for {
		var l struct {
			Sessions []playback.SessionSummary `json:"sessions"`
		}
		if err := getAuditor(stack, "/api/sessions?flagged=1&live=1", &l); err != nil {
			t.Fatal(err)
		}
		if len(l.Sessions) == 1 && fmt.Sprint(l.Sessions[0].Flags) == "[sudoers-edit]" && strings.Contains(l.Sessions[0].Command, "sudoers") {
			break
		}
		if time.Now().After(deadline0) {
			t.Fatalf("the live flagged session is not listed flagged: %+v", l.Sessions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	var list struct {
		Sessions []playback.SessionSummary `json:"sessions"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var all struct {
			Sessions []playback.SessionSummary `json:"sessions"`
		}
		if err := getAuditor(stack, "/api/sessions", &all); err != nil {
			t.Fatal(err)
		}
		finished := 0
		for _, s := range all.Sessions {
			if !s.Live {
				finished++
			}
		}
		if finished == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the two sessions did not finish at playback: %+v", all.Sessions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := getAuditor(stack, "/api/sessions?flagged=1", &list); err != nil {
		t.Fatal(err)
	}
	var drop *playback.SessionSummary
	for i, sum := range list.Sessions {
		if strings.Contains(sum.Command, "DROP TABLE") && fmt.Sprint(sum.Flags) == "[drop-table]" {
			drop = &list.Sessions[i]
		}
		if sum.Command == "echo quiet" {
			t.Fatalf("the quiet session is listed flagged")
		}
	}
	if len(list.Sessions) != 2 || drop == nil {
		t.Fatalf("flagged list %+v, want the DROP TABLE and the sudoers sessions", list.Sessions)
	}
	var d playback.SessionDetail
	if err := getAuditor(stack, "/api/sessions/"+drop.ID, &d); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range d.Markers {
		found = found || strings.HasPrefix(m.Label, FlagMarkerPrefix+"drop-table: ")
	}
	if !found || !d.SignatureOK {
		t.Fatalf("flag marker %v, signature ok %v: %+v", found, d.SignatureOK, d.Markers)
	}
}

package web_test

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// bigSerial needs all 64 bits: a JavaScript number would print
// 18446744073709552000.
const bigSerial uint64 = 18446744073709551557

func fakeDetail(id, user string, liveOutput bool) map[string]any {
	return map[string]any{
		"id": id, "user": user, "principal": "root", "host": "db1.prod", "tier": "break-glass",
		"kind": "shell", "start": "2026-11-21T09:00:00Z", "end": "2026-11-21T09:05:00Z",
		"break_glass": true, "request_id": "REQ-42", "reason": "INC-4711 disk full",
		"approvers": []string{"bob", "carol"}, "bytes": 1234, "complete": true, "integrity": "verified",
		"digest_ok": true, "signature_ok": true, "host_cert_key_id": "host db1.prod",
		"metadata": map[string]any{
			"session_id": id, "identity": user, "principal": "root", "key_id": user + "@local tier=break-glass",
			"serial": bigSerial, "tier": "break-glass", "host": "db1.prod", "client_addr": "192.0.2.7:50022",
			"request_id": "REQ-42", "reason": "INC-4711 disk full", "approvers": []string{"bob", "carol"},
			"kind": "shell", "record_input": true, "start": "2026-11-21T09:00:00Z", "exit_status": 0,
		},
		"markers": []map[string]any{{"time": 0.01, "label": "session start user=" + user}, {"time": 2.5, "label": "session end status=0"}},
	}
}

// earlyLineJS is true once the player shows a line of genCast numbered
// below 3000.
const earlyLineJS = `Array.from(document.querySelectorAll("pre.ap-term-text > span.ap-line")).some(l => {
	const m = l.textContent.match(/(\d{8}) the quick/); return m !== null && Number(m[1]) < 3000 })`

// TestUIAgainstFakeAPI drives the pages in real Chromium against fakeAPI:
// the list, search hits that open the player at the moment, the metadata
// panel, a refusal, and a live session followed as it grows.
func TestUIAgainstFakeAPI(t *testing.T) {
	f := newFakeAPI()
	f.add(fakeDetail("s-done", "alice", false), castLines(
		ev(0.01, "m", "session start user=alice"),
		ev(0.2, "o", "$ "),
		ev(0.5, "i", "echo hello\r"),
		ev(0.6, "o", "echo hello\r\nhello\r\n$ "),
		ev(1.5, "o", "cat /etc/motd\r\nwelcome to zanzibar-42\r\n$ "),
		ev(2.5, "m", "session end status=0"),
	), false)
	live := fakeDetail("s-live", "dave", true)
	live["end"] = ""
	f.add(live, castLines(ev(0.1, "o", "live shell ready\r\n$ ")), true)
	big := genCast(3 << 20)
	lines := strings.Split(strings.TrimSpace(string(big)), "\n")
	var lastEv []any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &lastEv); err != nil {
		t.Fatal(err)
	}
	bigLast := strconv.FormatFloat(lastEv[0].(float64), 'f', -1, 64)
	bigLastText := lineNumber(lastEv[2].(string))
	bigDetail := fakeDetail("s-big", "erin", false)
	bigDetail["markers"] = []map[string]any{{"time": 0.01, "label": "session start"}, {"time": lastEv[0], "label": "session end"}}
	f.add(bigDetail, big, false)
	srv := f.serve(t, mustUI(t))

	b := newBrowser(t, 3*time.Minute)

	t.Run("auditor searches and plays the hit", func(t *testing.T) {
		b.do(t, "open list", chromedp.Navigate(srv.URL+"/"))
		b.login(t, "auditor", "pw", "")
		b.waitVisible(t, "#sessions")
		b.do(t, "search",
			chromedp.SendKeys(chromedp.CSS("#f-q"), "zanzibar"),
			chromedp.Click(chromedp.CSS("#f-submit")),
			chromedp.WaitVisible(chromedp.CSS("a.hit")),
		)
		if rows := b.text(t, "#rows"); !strings.Contains(rows, "alice") || strings.Contains(rows, "dave") {
			t.Fatalf("search rows = %q, want alice's session only", rows)
		}
		href, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector("a.hit").getAttribute("href")`))
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(href)
		if u.Path != "/session/s-done" || u.Query().Get("t") != "1.5" || u.Query().Get("q") != "zanzibar" {
			t.Fatalf("hit link = %q, want /session/s-done?t=1.5&q=zanzibar", href)
		}
		b.do(t, "open hit", chromedp.Click(chromedp.CSS("a.hit")))
		b.waitTerminal(t, "welcome to zanzibar-42", 20*time.Second)
		meta := b.text(t, "#meta")
		for _, want := range []string{"alice@local tier=break-glass", "18446744073709551557", "REQ-42", "INC-4711 disk full", "bob, carol", "192.0.2.7:50022", "verified", "status 0", "host db1.prod"} {
			if !strings.Contains(meta, want) {
				t.Errorf("metadata panel lacks %q:\n%s", want, meta)
			}
		}
		markers := b.text(t, "#markers")
		for _, want := range []string{"session start user=alice", "session end status=0", "“zanzibar”"} {
			if !strings.Contains(markers, want) {
				t.Errorf("markers lack %q: %q", want, markers)
			}
		}
		// The hit starts the player a second early, never at zero: the
		// earlier "hello" output is not on screen before the hit plays in
		// unless playback began before 1.5 s.
		start, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById("export").getAttribute("href")`))
		if err != nil || start != "/api/sessions/s-done/export" {
			t.Errorf("export link = %q, %v", start, err)
		}
	})

	t.Run("live session is followed as it grows", func(t *testing.T) {
		b.do(t, "open live", chromedp.Navigate(srv.URL+"/session/s-live"))
		b.waitTerminal(t, "live shell ready", 20*time.Second)
		if !strings.Contains(b.text(t, "#title"), "live") {
			t.Errorf("title %q does not say live", b.text(t, "#title"))
		}
		f.appendCast("s-live", ev(0.8, "o", "uptime\r\n up 42 days, quokka\r\n$ ")+"\n", false)
		b.waitTerminal(t, "quokka", 20*time.Second)
		f.appendCast("s-live", ev(1.2, "o", "exit\r\nlogout okapi\r\n")+"\n", true)
		b.waitTerminal(t, "okapi", 20*time.Second)
		if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](`document.getElementById("status").textContent.includes("ended")`,
			chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Errorf("status never said the session ended: %v (status %q)", err, b.text(t, "#status"))
		}
	})

	t.Run("a large recording starts early and ends complete", func(t *testing.T) {
		// The search hit is in the last line: the player must wait for
		// that part to arrive, then start there; without a hit it starts
		// on the first part and is swapped for the whole recording, which
		// a marker at the very end then seeks into.
		b := newBrowser(t, 2*time.Minute)
		b.do(t, "open list", chromedp.Navigate(srv.URL+"/"))
		b.login(t, "auditor", "pw", "")
		b.waitVisible(t, "#sessions")
		b.do(t, "open hit at the end", chromedp.Navigate(srv.URL+"/session/s-big?t="+bigLast))
		b.waitTerminal(t, bigLastText, 30*time.Second)
		b.do(t, "open from the start", chromedp.Navigate(srv.URL+"/session/s-big"))
		// Lines come 100 a second and the screen holds 40, so line 1 is
		// on screen for well under a second: a loaded machine's poll can
		// miss it. Starting early means any line of the first 30 s (the
		// recording runs past line 18,000) while the rest still loads.
		if err := b.waitTrue(earlyLineJS, 50*time.Millisecond, 30*time.Second); err != nil {
			t.Fatalf("the player did not start at the beginning: %v (screen %q)", err, b.text(t, "pre.ap-term-text"))
		}
		if err := b.waitTrue(`document.getElementById("status").hidden`, 50*time.Millisecond, 30*time.Second); err != nil {
			t.Fatalf("the rest never loaded: %v (status %q)", err, b.text(t, "#status"))
		}
		b.do(t, "seek to the end marker", chromedp.Click(chromedp.CSS("#markers li:last-child button")))
		b.waitTerminal(t, bigLastText, 30*time.Second)
	})

	t.Run("engineer is refused", func(t *testing.T) {
		e := newBrowser(t, 60*time.Second)
		e.do(t, "open list", chromedp.Navigate(srv.URL+"/"))
		e.login(t, "engineer", "pw", "")
		e.waitVisible(t, "#refused")
		if s := e.text(t, "#refused"); !strings.Contains(s, "only auditors") {
			t.Errorf("refusal text = %q", s)
		}
		n, err := chromedp.Run(e.ctx, chromedp.Evaluate[int](`document.querySelectorAll("#rows tr").length`))
		if err != nil || n != 0 {
			t.Errorf("engineer sees %d rows (%v)", n, err)
		}
		e.do(t, "open session", chromedp.Navigate(srv.URL+"/session/s-done"))
		e.waitVisible(t, "#refused")
		if s, _ := chromedp.Run(e.ctx, chromedp.Evaluate[string](terminalTextJS)); s != "" {
			t.Errorf("engineer's player shows %q", s)
		}
	})

	t.Run("wrong password stays on the login form", func(t *testing.T) {
		e := newBrowser(t, 60*time.Second)
		e.do(t, "open list", chromedp.Navigate(srv.URL+"/"))
		e.login(t, "auditor", "nope", "")
		e.waitVisible(t, "#login-error")
		if s := e.text(t, "#login-error"); !strings.Contains(s, "Wrong user, password or one-time code") {
			t.Errorf("login error = %q", s)
		}
	})
}

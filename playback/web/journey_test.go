package web_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sshward/sshward/playback/web/webtest"
)

// TestAuditorJourney is the browser test against the real system:
// a CA, a playback server that joined it, a host that recorded sessions and
// shipped them. An auditor logs in, finds a session by a word it printed,
// plays it and sees the word in the player beside the session's metadata;
// a live session is followed as it grows; an engineer is refused.
func TestAuditorJourney(t *testing.T) {
	st := webtest.New(t)
	st.Record(t, webtest.Session{ID: "s-quiet", User: "carol", Tier: "staging", Steps: []webtest.Step{
		{After: 100 * time.Millisecond, Output: "$ "},
		{After: time.Second, Output: "uptime\r\n up 3 days\r\n$ "},
	}})
	st.Record(t, webtest.Session{ID: "s-word", User: "alice", Tier: "break-glass", RequestID: "REQ-42",
		Reason: "INC-4711 disk full", Approvers: []string{"bob", "dave"}, Steps: []webtest.Step{
			{After: 100 * time.Millisecond, Output: "root@web1:~# "},
			{After: time.Second, Input: "cat /etc/motd\r"},
			{After: 100 * time.Millisecond, Output: "cat /etc/motd\r\n"},
			{After: 1300 * time.Millisecond, Output: "welcome to zanzibar\r\nroot@web1:~# "},
			{After: 3 * time.Second, Output: "exit\r\n"},
		}})
	// Binary output (gzip bytes, not UTF-8) between text: the cast holds a
	// side-blob reference and its preview (recorder blob.go). In a terminal
	// session the run starts at the first byte that is not UTF-8 (0x8b):
	// control characters such as 0x1f stay in the cast for the terminal.
	st.Record(t, webtest.Session{ID: "s-binary", User: "carol", Tier: "staging", Steps: []webtest.Step{
		{After: 100 * time.Millisecond, Output: "$ cat backup.tar.gz\r\n"},
		{After: 100 * time.Millisecond, Output: "\x1f\x8b\x08\x00\xff\xfe\xfd\x00\x01\x02binary tail"},
		{After: 100 * time.Millisecond, Output: "\r\nafter the download, a prompt again with plenty of text\r\n$ "},
	}})
	st.WaitSearch(t, "s-word", "zanzibar")

	b := newBrowser(t, 2*time.Minute)
	t.Run("auditor finds the session by a word and plays it", func(t *testing.T) {
		b.do(t, "open", chromedp.Navigate(st.URL+"/"))
		b.login(t, webtest.Auditor, webtest.Password, "")
		b.waitVisible(t, "tr.session-row")
		if rows := b.text(t, "#rows"); !strings.Contains(rows, "alice") || !strings.Contains(rows, "carol") {
			t.Fatalf("session list = %q, want alice's and carol's sessions", rows)
		}
		b.do(t, "search",
			chromedp.SendKeys(chromedp.CSS("#f-q"), "zanzibar"),
			chromedp.Click(chromedp.CSS("#f-submit")),
			chromedp.WaitVisible(chromedp.CSS("a.hit")),
		)
		if rows := b.text(t, "#rows"); strings.Contains(rows, "carol") || !strings.Contains(rows, "zanzibar") {
			t.Fatalf("search results = %q, want only alice's session with the hit", rows)
		}
		href, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector("a.hit").getAttribute("href")`))
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(href)
		if err != nil || u.Path != "/session/s-word" || u.Query().Get("t") == "" {
			t.Fatalf("hit links to %q, want /session/s-word?t=…", href)
		}
		b.do(t, "open the hit", chromedp.Click(chromedp.CSS("a.hit")))
		screen := b.waitTerminal(t, "welcome to zanzibar", 30*time.Second)
		if !strings.Contains(screen, "cat /etc/motd") {
			t.Errorf("screen lacks the command before the hit:\n%s", screen)
		}
		b.waitVisible(t, "#meta dd")
		meta := b.text(t, "#meta")
		for _, want := range []string{"verified", "alice@local tier=break-glass", "18446744073709551557", "REQ-42",
			"INC-4711 disk full", "bob, dave", "192.0.2.7:50022", "web1.prod", "host web1.prod", "status 0", "break-glass",
			"Uploaded by", "Provenance: user_cert", "signed by the break-glass user CA", "Provenance: host"} {
			if !strings.Contains(meta, want) {
				t.Errorf("metadata panel lacks %q:\n%s", want, meta)
			}
		}
		if markers := b.text(t, "#markers"); !strings.Contains(markers, "zanzibar") {
			t.Errorf("markers lack the search hit: %q", markers)
		}
	})

	t.Run("auditor plays a session with binary output", func(t *testing.T) {
		b.do(t, "open", chromedp.Navigate(st.URL+"/session/s-binary"))
		screen := b.waitTerminal(t, "after the download", 30*time.Second)
		for _, want := range []string{"$ cat backup.tar.gz", "[binary output: 20 bytes, blob offset 0: 8b0800ff fefd0001"} {
			if !strings.Contains(screen, want) {
				t.Errorf("the player shows\n%s\nwithout %q", screen, want)
			}
		}
		if strings.Contains(screen, "\uFFFD") {
			t.Errorf("the player shows replacement characters:\n%s", screen)
		}
		b.waitVisible(t, "#meta dd")
		if meta := b.text(t, "#meta"); !strings.Contains(meta, "Binary output") || !strings.Contains(meta, "20 bytes in the blob, sha256 ") {
			t.Errorf("metadata panel lacks the blob:\n%s", meta)
		}
	})

	t.Run("auditor follows a live session", func(t *testing.T) {
		live := st.StartLive(t, webtest.Session{ID: "s-live", User: "dave", Steps: []webtest.Step{
			{After: 100 * time.Millisecond, Output: "live shell ready\r\n$ "},
		}})
		b.do(t, "open", chromedp.Navigate(st.URL+"/session/s-live"))
		b.waitTerminal(t, "live shell ready", 30*time.Second)
		live.Add(t, webtest.Step{After: time.Second, Output: "tail -f /var/log/syslog\r\nokapi sighted\r\n"})
		b.waitTerminal(t, "okapi sighted", 30*time.Second)
		live.Finish(t)
		if err := b.waitTrue(`document.getElementById("status").textContent.includes("ended")`, 50*time.Millisecond, 30*time.Second); err != nil {
			t.Errorf("the page never said the session ended: %v", err)
		}
		if err := b.waitTrue(`document.getElementById("meta").textContent.includes("verified")`, 50*time.Millisecond, 30*time.Second); err != nil {
			t.Errorf("the metadata never turned verified: %v", err)
		}
	})

	t.Run("engineer is refused", func(t *testing.T) {
		e := newBrowser(t, time.Minute)
		e.do(t, "open", chromedp.Navigate(st.URL+"/"))
		e.login(t, webtest.Engineer, webtest.Password, "")
		e.waitVisible(t, "#refused")
		if s := e.text(t, "#refused"); !strings.Contains(s, "only auditors") {
			t.Errorf("refusal = %q", s)
		}
		e.do(t, "open a session", chromedp.Navigate(st.URL+"/session/s-word"))
		e.waitVisible(t, "#refused")
		if s, _ := chromedp.Run(e.ctx, chromedp.Evaluate[string](terminalTextJS)); strings.Contains(s, "zanzibar") {
			t.Errorf("the engineer's page shows the recording: %q", s)
		}
		if n, _ := chromedp.Run(e.ctx, chromedp.Evaluate[int](`document.querySelectorAll("#meta dd").length`)); n != 0 {
			t.Errorf("the engineer's page shows %d metadata fields", n)
		}
	})
}

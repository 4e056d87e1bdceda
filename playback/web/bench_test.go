package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sshward/sshward/playback/web/webtest"
)

// genCast returns an asciicast v2 recording of about size bytes that looks
// like a busy shell: numbered lines of text with colour (about 190 bytes,
// so 100 MB stays within the server's per-recording index budget), 10 ms
// apart, the first one at 10 ms.
func genCast(size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 256)
	b.WriteString(`{"version":2,"width":120,"height":40,"timestamp":1763700000,"env":{"TERM":"xterm-256color"}}` + "\n")
	for i := 1; b.Len() < size; i++ {
		fmt.Fprintf(&b, `[%d.%02d, "o", "\u001b[32m%08d\u001b[0m the quick brown fox jumps over the lazy dog %s\r\n"]`+"\n",
			i/100, i%100, i, strings.Repeat("x", 100+i%40))
	}
	return b.Bytes()
}

// firstFrameJS is true once the player shows a row with text.
const firstFrameJS = `Array.from(document.querySelectorAll("pre.ap-term-text > span.ap-line")).some(l => l.textContent.trim() !== "")`

// BenchmarkFirstFrame is the `make bench` figure "replay start of a 100 MB
// recording: first frame < 1 s in the browser": the time from navigating to
// the session page (signed in, recording stored) to the first row of text in
// the player. Reported as first-frame-ms (the mean over b.N page loads,
// also ns/op) and cold-first-frame-ms (the first load of a fresh browser).
// Run by `make bench` (.ci/bench) with -benchtime 1x; the 100 MB recording
// takes about a minute to ship and index before the clock starts.
func BenchmarkFirstFrame(b *testing.B) {
	for _, size := range []int{1 << 20, 100 << 20} {
		b.Run(fmt.Sprintf("%dMB", size>>20), func(b *testing.B) {
			pageURL, login := benchServer(b, genCast(size))
			br := newBrowser(b, 10*time.Minute)
			login(br)
			var total, cold time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if err := chromedp.Do(br.ctx, chromedp.Navigate("about:blank")); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				if err := chromedp.Do(br.ctx, chromedp.Navigate(pageURL)); err != nil {
					b.Fatal(err)
				}
				if err := br.waitTrue(firstFrameJS, 5*time.Millisecond, 2*time.Minute); err != nil {
					b.Fatalf("no first frame: %v", err)
				}
				d := time.Since(start)
				if i == 0 {
					cold = d // the browser has not seen the player script yet
				}
				total += d
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "first-frame-ms")
			b.ReportMetric(float64(cold.Milliseconds()), "cold-first-frame-ms")
			b.ReportMetric(float64(size)/1e6, "cast-MB")
		})
	}
}

// benchServer ships cast to a real playback server (webtest.Stack) as the
// only recording, waits until its text is indexed (so the indexer does not
// compete with the browser), and returns its page and a func that signs a
// browser in as the auditor.
func benchServer(b *testing.B, cast []byte) (string, func(*browser)) {
	st := webtest.New(b)
	st.Ingest(b, webtest.Session{ID: "bench-1"}, cast)
	last := cast[bytes.LastIndexByte(cast[:len(cast)-1], '\n')+1:]
	var ev []any
	if err := json.Unmarshal(last, &ev); err != nil {
		b.Fatal(err)
	}
	st.WaitSearch(b, "bench-1", lineNumber(ev[2].(string)))
	return st.URL + "/session/bench-1", func(br *browser) {
		br.do(b, "open", chromedp.Navigate(st.URL+"/"))
		br.login(b, webtest.Auditor, webtest.Password, "")
		br.waitVisible(b, "#sessions")
	}
}

// lineNumber is the "%08d" a genCast line starts with (after its colour).
func lineNumber(data string) string { return data[5:13] }

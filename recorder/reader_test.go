package recorder_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

const goodHeader = `{"version": 2, "width": 80, "height": 24}` + "\n"

func TestReaderAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		cast string
		want []recorder.Event
	}{
		{"asciinema rec output", `{"version": 2, "width": 100, "height": 30, "timestamp": 1700000000, "idle_time_limit": 2.5, "env": {"SHELL": "/bin/bash", "TERM": "xterm"}, "theme": {"fg": "#fff"}}` + "\n" +
			`[0.012, "o", "$ "]` + "\n" + `[1.5, "i", "l"]` + "\n" + `[1.5, "r", "90x20"]` + "\n",
			[]recorder.Event{{0.012, "o", "$ "}, {1.5, "i", "l"}, {1.5, "r", "90x20"}}},
		{"header only", goodHeader, nil},
		{"compact and escaped", goodHeader + `[0,"o","\u65e5\n\"\\"]` + "\n", []recorder.Event{{0, "o", "日\n\"\\"}}},
		{"last line without newline", goodHeader + `[1, "m", "end"]`, []recorder.Event{{1, "m", "end"}}},
		{"crlf line ends", strings.ReplaceAll(goodHeader+`[1, "o", "a"]`+"\n", "\n", "\r\n"), []recorder.Event{{1, "o", "a"}}},
		{"exit event", goodHeader + `[2.5, "x", "0"]` + "\n", []recorder.Event{{2.5, "x", "0"}}},
		{"exponent time", goodHeader + `[1e-3, "o", "a"]` + "\n", []recorder.Event{{0.001, "o", "a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, evs := recordertest.MustParseCast(t, []byte(tc.cast))
			if len(evs) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", evs, tc.want)
			}
			for i := range evs {
				if evs[i] != tc.want[i] {
					t.Errorf("event %d: got %+v, want %+v", i, evs[i], tc.want[i])
				}
			}
		})
	}
}

func TestReaderRejects(t *testing.T) {
	long := goodHeader + `[1, "o", "` + strings.Repeat("a", recorder.MaxLineBytes) + `"]` + "\n"
	for _, tc := range []struct {
		name string
		cast string
		want error // at recorder.NewReader or at some Next
	}{
		{"empty", "", recorder.ErrMalformed},
		{"header not json", "hello\n", recorder.ErrMalformed},
		{"header is an array", `[2, 80, 24]` + "\n", recorder.ErrMalformed},
		{"version 1", `{"version": 1, "width": 80, "height": 24, "stdout": []}` + "\n", recorder.ErrMalformed},
		{"version 3", `{"version": 3, "term": {"cols": 80, "rows": 24}}` + "\n", recorder.ErrMalformed},
		{"no width", `{"version": 2, "height": 24}` + "\n", recorder.ErrMalformed},
		{"width as string", `{"version": 2, "width": "80", "height": 24}` + "\n", recorder.ErrMalformed},
		{"blank line", goodHeader + "\n" + `[1, "o", "a"]` + "\n", recorder.ErrMalformed},
		{"cut-off last line", goodHeader + `[1, "o", "a"]` + "\n" + `[2, "o", "hal`, recorder.ErrMalformed},
		{"object event", goodHeader + `{"t": 1}` + "\n", recorder.ErrMalformed},
		{"two elements", goodHeader + `[1, "o"]` + "\n", recorder.ErrMalformed},
		{"four elements", goodHeader + `[1, "o", "a", "b"]` + "\n", recorder.ErrMalformed},
		{"null time", goodHeader + `[null, "o", "a"]` + "\n", recorder.ErrMalformed},
		{"string time", goodHeader + `["1", "o", "a"]` + "\n", recorder.ErrMalformed},
		{"negative time", goodHeader + `[-1, "o", "a"]` + "\n", recorder.ErrMalformed},
		{"huge time", goodHeader + `[1e999, "o", "a"]` + "\n", recorder.ErrMalformed},
		{"time backwards", goodHeader + `[2, "o", "a"]` + "\n" + `[1, "o", "b"]` + "\n", recorder.ErrMalformed},
		{"null code", goodHeader + `[1, null, "a"]` + "\n", recorder.ErrMalformed},
		{"unknown code", goodHeader + `[1, "z", "a"]` + "\n", recorder.ErrMalformed},
		{"numeric data", goodHeader + `[1, "o", 5]` + "\n", recorder.ErrMalformed},
		{"null data", goodHeader + `[1, "o", null]` + "\n", recorder.ErrMalformed},
		{"bad resize", goodHeader + `[1, "r", "80 by 24"]` + "\n", recorder.ErrMalformed},
		{"zero resize", goodHeader + `[1, "r", "0x24"]` + "\n", recorder.ErrMalformed},
		{"trailing garbage", goodHeader + `[1, "o", "a"] x` + "\n", recorder.ErrMalformed},
		{"line too long", long, recorder.ErrLineTooLong},
		{"header too long", `{"version": 2, "width": 80, "height": 24, "title": "` + strings.Repeat("t", recorder.MaxLineBytes) + `"}` + "\n", recorder.ErrLineTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := readAll(strings.NewReader(tc.cast))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// readAll reads a cast to the end, returning the first error (nil at EOF).
func readAll(r io.Reader) error {
	rd, err := recorder.NewReader(r)
	if err != nil {
		return err
	}
	for {
		_, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			// A failed reader stays failed.
			if _, again := rd.Next(); !errors.Is(again, err) {
				return errors.New("reader did not stay failed")
			}
			return err
		}
	}
}

func TestEventSize(t *testing.T) {
	for _, tc := range []struct {
		data       string
		cols, rows int
		ok         bool
	}{
		{"80x24", 80, 24, true},
		{"1x1", 1, 1, true},
		{"80x", 0, 0, false},
		{"x24", 0, 0, false},
		{"+80x24", 0, 0, false},
		{"-80x24", 0, 0, false},
		{"80x24x1", 0, 0, false},
		{"99999999x1", 0, 0, false},
	} {
		t.Run(tc.data, func(t *testing.T) {
			cols, rows, err := recorder.Event{Code: recorder.CodeResize, Data: tc.data}.Size()
			if (err == nil) != tc.ok || cols != tc.cols || rows != tc.rows {
				t.Errorf("got %d, %d, %v", cols, rows, err)
			}
		})
	}
	if _, _, err := (recorder.Event{Code: recorder.CodeOutput, Data: "80x24"}).Size(); err == nil {
		t.Error("Size of an output event")
	}
}

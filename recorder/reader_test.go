package recorder

import (
	"errors"
	"io"
	"strings"
	"testing"
)

const goodHeader = `{"version": 2, "width": 80, "height": 24}` + "\n"

func TestReaderAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		cast string
		want []Event
	}{
		{"asciinema rec output", `{"version": 2, "width": 100, "height": 30, "timestamp": 1700000000, "idle_time_limit": 2.5, "env": {"SHELL": "/bin/bash", "TERM": "xterm"}, "theme": {"fg": "#fff"}}` + "\n" +
			`[0.012, "o", "$ "]` + "\n" + `[1.5, "i", "l"]` + "\n" + `[1.5, "r", "90x20"]` + "\n",
			[]Event{{0.012, "o", "$ "}, {1.5, "i", "l"}, {1.5, "r", "90x20"}}},
		{"header only", goodHeader, nil},
		{"compact and escaped", goodHeader + `[0,"o","\u65e5\n\"\\"]` + "\n", []Event{{0, "o", "日\n\"\\"}}},
		{"last line without newline", goodHeader + `[1, "m", "end"]`, []Event{{1, "m", "end"}}},
		{"crlf line ends", strings.ReplaceAll(goodHeader+`[1, "o", "a"]`+"\n", "\n", "\r\n"), []Event{{1, "o", "a"}}},
		{"exit event", goodHeader + `[2.5, "x", "0"]` + "\n", []Event{{2.5, "x", "0"}}},
		{"exponent time", goodHeader + `[1e-3, "o", "a"]` + "\n", []Event{{0.001, "o", "a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, evs := parseCast(t, []byte(tc.cast))
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
	long := goodHeader + `[1, "o", "` + strings.Repeat("a", MaxLineBytes) + `"]` + "\n"
	for _, tc := range []struct {
		name string
		cast string
		want error // at NewReader or at some Next
	}{
		{"empty", "", ErrMalformed},
		{"header not json", "hello\n", ErrMalformed},
		{"header is an array", `[2, 80, 24]` + "\n", ErrMalformed},
		{"version 1", `{"version": 1, "width": 80, "height": 24, "stdout": []}` + "\n", ErrMalformed},
		{"version 3", `{"version": 3, "term": {"cols": 80, "rows": 24}}` + "\n", ErrMalformed},
		{"no width", `{"version": 2, "height": 24}` + "\n", ErrMalformed},
		{"width as string", `{"version": 2, "width": "80", "height": 24}` + "\n", ErrMalformed},
		{"blank line", goodHeader + "\n" + `[1, "o", "a"]` + "\n", ErrMalformed},
		{"cut-off last line", goodHeader + `[1, "o", "a"]` + "\n" + `[2, "o", "hal`, ErrMalformed},
		{"object event", goodHeader + `{"t": 1}` + "\n", ErrMalformed},
		{"two elements", goodHeader + `[1, "o"]` + "\n", ErrMalformed},
		{"four elements", goodHeader + `[1, "o", "a", "b"]` + "\n", ErrMalformed},
		{"null time", goodHeader + `[null, "o", "a"]` + "\n", ErrMalformed},
		{"string time", goodHeader + `["1", "o", "a"]` + "\n", ErrMalformed},
		{"negative time", goodHeader + `[-1, "o", "a"]` + "\n", ErrMalformed},
		{"huge time", goodHeader + `[1e999, "o", "a"]` + "\n", ErrMalformed},
		{"time backwards", goodHeader + `[2, "o", "a"]` + "\n" + `[1, "o", "b"]` + "\n", ErrMalformed},
		{"null code", goodHeader + `[1, null, "a"]` + "\n", ErrMalformed},
		{"unknown code", goodHeader + `[1, "z", "a"]` + "\n", ErrMalformed},
		{"numeric data", goodHeader + `[1, "o", 5]` + "\n", ErrMalformed},
		{"null data", goodHeader + `[1, "o", null]` + "\n", ErrMalformed},
		{"bad resize", goodHeader + `[1, "r", "80 by 24"]` + "\n", ErrMalformed},
		{"zero resize", goodHeader + `[1, "r", "0x24"]` + "\n", ErrMalformed},
		{"trailing garbage", goodHeader + `[1, "o", "a"] x` + "\n", ErrMalformed},
		{"line too long", long, ErrLineTooLong},
		{"header too long", `{"version": 2, "width": 80, "height": 24, "title": "` + strings.Repeat("t", MaxLineBytes) + `"}` + "\n", ErrLineTooLong},
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
	rd, err := NewReader(r)
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
			cols, rows, err := Event{Code: CodeResize, Data: tc.data}.Size()
			if (err == nil) != tc.ok || cols != tc.cols || rows != tc.rows {
				t.Errorf("got %d, %d, %v", cols, rows, err)
			}
		})
	}
	if _, _, err := (Event{Code: CodeOutput, Data: "80x24"}).Size(); err == nil {
		t.Error("Size of an output event")
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFollowBodyFaults breaks a followed stream in the ways a network and a
// server can, against an httptest server standing in for the playback API,
// and checks what followBody hands the player: the recording's bytes
// exactly, or the server's refusal.
func TestFollowBodyFaults(t *testing.T) {
	const cast = `{"version":2,"width":80,"height":24}` + "\n" + `[0.1,"o","one\r\n"]` + "\n" + `[0.2,"o","two\r\n"]` + "\n" + `[0.3,"o","three\r\n"]` + "\n"
	tests := []struct {
		name string
		// serve answers the n-th request for the cast (0 first).
		serve   func(w http.ResponseWriter, r *http.Request, n int)
		want    string // bytes read
		wantErr string
		says    []string
	}{
		{
			// A server from before ?offset= sends from the start again: the
			// bytes already read are skipped, not played twice.
			name: "cut mid-line, old server starts over",
			serve: func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 0 {
					io.WriteString(w, cast[:60])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler) // the connection breaks
				}
				io.WriteString(w, cast)
			},
			want: cast,
			says: []string{"connection to the playback server lost", "reconnected, resuming at byte 60"},
		},
		{
			name: "cut mid-line, server resumes at the offset",
			serve: func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 0 {
					io.WriteString(w, cast[:45])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				}
				if r.URL.Query().Get("offset") != "45" {
					t.Errorf("reconnected with offset %q, want 45", r.URL.Query().Get("offset"))
				}
				w.Header().Set("X-Sshward-Offset", "45")
				io.WriteString(w, cast[45:])
			},
			want: cast,
			says: []string{"lost", "resuming at byte 45"},
		},
		{
			// The stream ends cleanly while the session is still live (a
			// server shutting down ends its handlers): not the end.
			name: "clean end while live",
			serve: func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 0 {
					io.WriteString(w, cast[:60])
					return
				}
				w.Header().Set("X-Sshward-Offset", r.URL.Query().Get("offset"))
				io.WriteString(w, cast[60:])
			},
			want: cast,
			says: []string{"lost (the server ended the stream)", "resuming at byte 60"},
		},
		{
			name: "session deleted meanwhile",
			serve: func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 0 {
					io.WriteString(w, cast[:60])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				}
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"code":"not_found","message":"no session s-x"}`)
			},
			want:    cast[:60],
			wantErr: "no such session",
			says:    []string{"lost"},
		},
		{
			name: "server away for a while",
			serve: func(w http.ResponseWriter, r *http.Request, n int) {
				switch {
				case n == 0:
					io.WriteString(w, cast[:60])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				case n < 4:
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				w.Header().Set("X-Sshward-Offset", "60")
				io.WriteString(w, cast[60:])
			},
			want: cast,
			says: []string{"lost", "resuming at byte 60"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			casts := 0
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer tok" {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				if r.URL.Path == "/api/sessions/s-x" {
					// Finished once the last request began.
					mu.Lock()
					live := casts < 2
					mu.Unlock()
					json.NewEncoder(w).Encode(map[string]any{"id": "s-x", "live": live, "bytes": len(cast)})
					return
				}
				mu.Lock()
				n := casts
				casts++
				mu.Unlock()
				tt.serve(w, r, n)
			}))
			defer srv.Close()
			pc := &playbackClient{base: srv.URL, token: "tok", hc: srv.Client()}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			fb := &followBody{ctx: ctx, pc: pc, id: "s-x", sleep: func(context.Context, time.Duration) error { return nil }}
			var said []string
			fb.say = func(s string) { said = append(said, s) }
			body, err := fb.open(0)
			if err != nil {
				t.Fatal(err)
			}
			fb.body = body
			got, err := io.ReadAll(fb)
			if string(got) != tt.want {
				t.Errorf("read %q, want %q", got, tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			all := strings.Join(said, "\n")
			for _, s := range tt.says {
				if !strings.Contains(all, s) {
					t.Errorf("said %q, want %q in it", all, s)
				}
			}
		})
	}
}

package playback_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// noCA refuses every reader: the ingest fuzz needs no CA.
type noCA struct{}

var errNoCA = errors.New("no CA in this test")

func (noCA) Session(context.Context, string) (*api.SessionInfo, error) { return nil, errNoCA }
func (noCA) Login(context.Context, api.LoginRequest) (*api.LoginResponse, error) {
	return nil, errNoCA
}
func (noCA) Logout(context.Context, string) error              { return errNoCA }
func (noCA) Trust(context.Context) (*api.TrustResponse, error) { return nil, errNoCA }

// FuzzIngest sends signed start, chunk and finish requests with fuzzed
// bodies, offsets and digests through the ingest handlers. The server never
// fails (5xx), never stores a chunk it did not acknowledge, and every
// acknowledged size is the previous one plus the chunk.
func FuzzIngest(f *testing.F) {
	hostCA := catest.NewSigner(f)
	h := newHost(f, "web1", hostCA, ssh.HostCert)
	st, err := store.Open(context.Background(), store.Config{Dir: f.TempDir(), InsecureSkipSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	srv, err := playback.New(playback.Config{Store: st, CA: noCA{}, HostCAs: func() []ssh.PublicKey { return []ssh.PublicKey{hostCA.PublicKey()} }})
	if err != nil {
		f.Fatal(err)
	}
	meta, _ := json.Marshal(recorder.Metadata{SessionID: "s", Kind: recorder.KindShell})
	f.Add(uint8(0), int64(0), meta, true)
	f.Add(uint8(1), int64(0), []byte(`{"version":2,"width":80,"height":24}`+"\n"), true)
	f.Add(uint8(1), int64(0), []byte("x\ny"), true)
	f.Add(uint8(1), int64(-1), []byte("x\n"), false)
	f.Add(uint8(2), int64(0), []byte(`{"metadata":{"session_id":"s"},"signature":"AAAA"}`), true)
	f.Add(uint8(0), int64(0), []byte(`{"session_id":"other","kind":"shell"}`), true)
	f.Add(uint8(0), int64(0), []byte(`{"session_id":"s","kind":"nope"}`), true)
	n := 0
	f.Fuzz(func(t *testing.T, action uint8, offset int64, body []byte, digestOK bool) {
		n++
		id := "fz" + strconv.Itoa(n)
		do := func(method, path string, body []byte, digest string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, path, bytes.NewReader(body))
			if digest != "" {
				req.Header.Set(recorder.ChunkDigestHeader, digest)
			}
			if err := hostauth.Sign(req, body, h.cert, h.signer, time.Now(), rand.Reader); err != nil {
				t.Fatal(err)
			}
			rr := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rr, req)
			if rr.Code >= 500 {
				t.Fatalf("%s %s: %d %s", method, path, rr.Code, rr.Body)
			}
			return rr
		}
		start, _ := json.Marshal(recorder.Metadata{SessionID: id, Kind: recorder.KindShell})
		if rr := do(http.MethodPost, recorder.IngestPath(id, recorder.IngestStart), start, ""); rr.Code != http.StatusOK {
			t.Fatalf("start: %d %s", rr.Code, rr.Body)
		}
		before, _, _ := st.Cast(id)
		switch action % 3 {
		case 0:
			do(http.MethodPost, recorder.IngestPath(id, recorder.IngestStart), body, "")
		case 1:
			digest := recorder.ChunkDigest(body)
			if !digestOK {
				digest = recorder.ChunkDigest(append(bytes.Clone(body), 'x'))
			}
			rr := do(http.MethodPut, recorder.IngestPath(id, recorder.IngestChunk)+"?offset="+strconv.FormatInt(offset, 10), body, digest)
			after, _, _ := st.Cast(id)
			if rr.Code == http.StatusOK {
				var got recorder.IngestStored
				if json.Unmarshal(rr.Body.Bytes(), &got) != nil || got.Stored != before.Size+int64(len(body)) || after.Size != got.Stored {
					t.Fatalf("acknowledged %s, stored %d, before %d + %d", rr.Body, after.Size, before.Size, len(body))
				}
			} else if after.Size != before.Size {
				t.Fatalf("refused (%d) but stored %d → %d", rr.Code, before.Size, after.Size)
			}
		case 2:
			rr := do(http.MethodPost, recorder.IngestPath(id, recorder.IngestFinish), body, "")
			if rr.Code == http.StatusOK {
				t.Fatalf("a fuzzed finish was accepted: %s", body)
			}
		}
	})
}

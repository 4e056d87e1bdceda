package playback

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// Live recordings across playback replicas (with Config.Objects and
// Config.URL). The replica receiving a live recording's upload (its
// holder) announces it in the bucket as
//
//	live/ID/REFRESHED.SINCE.URL
//
// (unix nanoseconds of the last refresh and of the start of the upload on
// this replica, and base64url of the holder's advertised URL), an empty
// object put again every liveRefresh and deleted when the recording
// finishes; an announcement not refreshed for liveTTL (its holder died) is
// ignored and deleted by whichever replica sees it. When a host fails over
// to another replica, the newer SINCE wins and the former holder stops
// announcing.
//
// Every replica lists live/ once per poll (Config.ReplicaSync). A recording
// held by another replica gets a local entry from the upload's start
// object (uploads/ID/start.json), so it is listed (sessions --live) and can
// be terminated (that goes to the CA) on any replica. Its detail, cast
// (follow) and commands are served by the holder: the request is
// reverse-proxied there with the reader's own credentials, so the holder
// authorises the real user and audits the view. The holder must be one of
// the CA's playback replicas (the trust bundle's playback_replicas) and
// present a certificate from the CA's root: a forged announcement in the
// bucket cannot send readers or their tokens anywhere else. A proxied
// request is never proxied again.

const (
	livePrefix = "live/"
	// liveRefresh is how often a holder puts its announcements again.
	liveRefresh = 10 * time.Second
	// liveTTL is how long an announcement stands without a refresh.
	liveTTL = 45 * time.Second
	// maxLiveImports bounds the start objects read per poll.
	maxLiveImports = 50
	// HeaderProxied marks a request one replica forwarded to another.
	HeaderProxied = "X-Sshward-Proxied"
	// CodeReplicaRefused is the error code of a live recording whose
	// announced holder is not a replica this server may forward to.
	CodeReplicaRefused = "replica_refused"
	// CodeReplicaUnavailable: the holder of a live recording cannot be reached.
	CodeReplicaUnavailable = "replica_unavailable"
)

// announcement is one parsed live/ object.
type announcement struct {
	key              string
	id, url          string
	refreshed, since time.Time
}

func parseAnnouncement(key string) (announcement, bool) {
	rest, ok := strings.CutPrefix(key, livePrefix)
	if !ok {
		return announcement{}, false
	}
	id, name, ok := strings.Cut(rest, "/")
	if !ok || recorder.CheckSessionID(id) != nil {
		return announcement{}, false
	}
	parts := strings.Split(name, ".")
	if len(parts) != 3 {
		return announcement{}, false
	}
	ref, err1 := strconv.ParseInt(parts[0], 10, 64)
	since, err2 := strconv.ParseInt(parts[1], 10, 64)
	u, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return announcement{}, false
	}
	return announcement{key: key, id: id, url: string(u), refreshed: time.Unix(0, ref), since: time.Unix(0, since)}, true
}

func announcementKey(id, url string, refreshed, since time.Time) string {
	return fmt.Sprintf("%s%s/%d.%d.%s", livePrefix, id, refreshed.UnixNano(), since.UnixNano(), base64.RawURLEncoding.EncodeToString([]byte(url)))
}

// liveState is what this replica holds and what it saw others hold.
type liveState struct {
	mu     sync.Mutex
	held   map[string]*liveHold    // recordings whose upload this replica receives
	remote map[string]announcement // the holder of live recordings held elsewhere (last poll)
}

type liveHold struct {
	since     time.Time
	key       string    // the announcement put last ("" before the first)
	announced time.Time // when
}

// announcing reports whether live recordings are shared between replicas.
func (s *Server) announcing() bool { return s.cfg.Objects != nil && s.cfg.URL != "" }

// hold marks id as received by this replica (a start or a chunk).
func (s *Server) hold(id string) {
	if !s.announcing() {
		return
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	if s.live.held[id] == nil {
		s.live.held[id] = &liveHold{since: s.cfg.Now()}
	}
	delete(s.live.remote, id)
}

// release stops announcing id (it finished here).
func (s *Server) release(ctx context.Context, id string) {
	if !s.announcing() {
		return
	}
	s.live.mu.Lock()
	h := s.live.held[id]
	delete(s.live.held, id)
	s.live.mu.Unlock()
	if h != nil && h.key != "" {
		if err := s.cfg.Objects.Delete(ctx, h.key); err != nil {
			s.log.WarnContext(ctx, "playback: could not withdraw a live announcement; it expires by itself", "session_id", id, "err", err)
		}
	}
}

// liveLoop announces what this replica holds and learns what the others
// hold, every Config.ReplicaSync.
func (s *Server) liveLoop(ctx context.Context) {
	every := s.cfg.ReplicaSync
	if every == 0 {
		every = defaultReplicaSync
	}
	if every < 0 || !s.announcing() {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.pollLive(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "playback: live recordings of other replicas: the bucket did not answer; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollLive is one round of liveLoop: one LIST of live/, the puts of this
// replica's refreshed announcements, and local entries for recordings
// held elsewhere.
func (s *Server) pollLive(ctx context.Context) error {
	now := s.cfg.Now()
	var seen []announcement
	for o, err := range s.cfg.Objects.List(ctx, livePrefix) {
		if err != nil {
			return fmt.Errorf("playback: list live recordings: %w", err)
		}
		if a, ok := parseAnnouncement(o.Key); ok {
			seen = append(seen, a)
		}
	}
	best := map[string]announcement{}
	var expired []string
	for _, a := range seen {
		if now.Sub(a.refreshed) > liveTTL {
			expired = append(expired, a.key)
			continue
		}
		if b, ok := best[a.id]; !ok || a.since.After(b.since) || (a.since.Equal(b.since) && a.refreshed.After(b.refreshed)) {
			best[a.id] = a
		}
	}
	for _, k := range expired[:min(len(expired), 100)] {
		if err := s.cfg.Objects.Delete(ctx, k); err != nil {
			return fmt.Errorf("playback: delete an expired live announcement: %w", err)
		}
	}

	// What this replica holds: refresh, or give up to a newer holder.
	type put struct {
		id, old string
		since   time.Time
	}
	var puts []put
	var gone []string
	s.live.mu.Lock()
	for id, h := range s.live.held {
		if b, ok := best[id]; ok && b.url != s.cfg.URL && b.since.After(h.since) {
			// The host moved to another replica after starting here.
			delete(s.live.held, id)
			if h.key != "" {
				gone = append(gone, h.key)
			}
			continue
		}
		if h.key == "" || now.Sub(h.announced) >= liveRefresh {
			puts = append(puts, put{id, h.key, h.since})
		}
	}
	remote := map[string]announcement{}
	var others []string
	for id, b := range best {
		if b.url != s.cfg.URL && s.live.held[id] == nil {
			remote[id] = b
			others = append(others, id)
		}
	}
	// A recording whose announcement is gone finished (or its holder
	// died): its holder still serves it until this replica imports it
	// (proxyLive forwards only while the local copy is unfinished).
	for id, old := range s.live.remote {
		if _, ok := remote[id]; !ok && s.live.held[id] == nil && now.Sub(old.refreshed) <= liveTTL {
			remote[id] = old
		}
	}
	s.live.remote = remote
	s.live.mu.Unlock()

	for _, k := range gone {
		if err := s.cfg.Objects.Delete(ctx, k); err != nil {
			return fmt.Errorf("playback: withdraw a live announcement: %w", err)
		}
	}
	for _, p := range puts {
		key := announcementKey(p.id, s.cfg.URL, now, p.since)
		if err := s.cfg.Objects.Put(ctx, key, bytes.NewReader(nil), 0); err != nil {
			return fmt.Errorf("playback: announce live recording %s: %w", p.id, err)
		}
		s.live.mu.Lock()
		h := s.live.held[p.id]
		if h != nil {
			h.key, h.announced = key, now
		}
		s.live.mu.Unlock()
		if h == nil {
			p.old = key // it finished meanwhile: withdraw what was just put
		}
		if p.old != "" {
			if err := s.cfg.Objects.Delete(ctx, p.old); err != nil {
				return fmt.Errorf("playback: replace a live announcement: %w", err)
			}
		}
	}

	// What others hold: a local entry to list, from the upload's start.
	imported := 0
	for _, id := range others {
		if imported >= maxLiveImports {
			break
		}
		if _, err := s.st.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			continue // present (live or finished) or the store failed (next poll)
		}
		imported++
		data, err := s.readObject(ctx, uploadStartKey(id), 1<<20)
		if err != nil {
			s.log.WarnContext(ctx, "playback: a live recording of another replica has no readable start", "session_id", id, "err", err)
			continue
		}
		var req store.StartRequest
		if err := json.Unmarshal(data, &req); err != nil || req.ID != id {
			s.log.WarnContext(ctx, "playback: the start object of a live recording is not valid", "session_id", id)
			continue
		}
		if _, err := s.st.Start(ctx, req); err != nil {
			s.log.WarnContext(ctx, "playback: could not list a live recording of another replica", "session_id", id, "err", err)
		}
	}
	return nil
}

// proxyLive answers a request about a live recording another replica
// holds by forwarding it there, and reports whether it did. It does not
// for a request already forwarded, a recording this replica holds or has
// finished, or without replicas.
func (s *Server) proxyLive(w http.ResponseWriter, r *http.Request) bool {
	if !s.announcing() || s.peers == nil || r.Header.Get(HeaderProxied) != "" {
		return false
	}
	id := r.PathValue("id")
	s.live.mu.Lock()
	a, ok := s.live.remote[id]
	s.live.mu.Unlock()
	if !ok {
		return false
	}
	if rec, err := s.st.Get(r.Context(), id); err == nil && rec.Finished {
		return false
	}
	target, err := url.Parse(a.url)
	if err != nil || target.Scheme != "https" || target.Host == "" || !s.isReplica(r.Context(), a.url) {
		s.log.WarnContext(r.Context(), "playback: a live announcement names a server that is not a playback replica of this CA; not followed",
			"session_id", id, "announced", a.url)
		writeError(w, http.StatusBadGateway, CodeReplicaRefused, "live session "+id+" is announced by "+strconv.Quote(a.url)+
			", which is not among the CA's playback replicas: not forwarded (check the bucket's live/ objects)")
		return true
	}
	rp := &httputil.ReverseProxy{
		Transport:     s.peers,
		FlushInterval: -1, // a followed cast: every write at once
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Header.Set(HeaderProxied, "1")
		},
		ModifyResponse: func(resp *http.Response) error {
			for _, h := range []string{"X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options"} {
				resp.Header.Del(h) // set here already
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			s.log.WarnContext(r.Context(), "playback: the replica holding a live recording did not answer", "session_id", id, "holder", a.url, "err", err)
			writeError(w, http.StatusBadGateway, CodeReplicaUnavailable, "live session "+id+" is received by the playback replica "+a.url+
				", which cannot be reached from this one (or did not prove it is a replica of this CA): try again, or ask that replica directly")
		},
	}
	rp.ServeHTTP(w, r)
	return true
}

// isReplica reports whether u is among the CA's playback replicas (the
// trust bundle; fetched again when u is not in the saved one, as a replica
// may have joined since).
func (s *Server) isReplica(ctx context.Context, u string) bool {
	u = strings.TrimRight(u, "/")
	in := func(tr *api.TrustResponse) bool {
		return tr != nil && slices.ContainsFunc(tr.PlaybackReplicas, func(p string) bool { return strings.TrimRight(p, "/") == u })
	}
	if tr, err := s.trust(ctx); err == nil && in(tr) {
		return true
	}
	tr, err := s.fetchTrust(ctx)
	return err == nil && in(tr)
}

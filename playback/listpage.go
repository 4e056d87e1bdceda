package playback

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// Paging of GET /api/sessions (issue 9, "Listing says when it is cut").
//
// The list is newest first, ordered by (start, id) as the store's start
// index is. A page that is not the last carries next_cursor: the start and
// id of its last session, base64url. The next page asks for cursor=…: the
// sessions that start at or before that moment, minus the ones at exactly
// that moment up to that id, so sessions that share a start time (a host
// replaying its spool) are neither repeated nor skipped, and sessions that
// arrive meanwhile (newer) never shift a page. With count=1 the answer also
// carries total, every session the filter matches (one pass over them).
// Clients that send neither get the first page, as before.

// listCursor is where a page ended.
type listCursor struct {
	start time.Time
	id    string
}

func (c listCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.start.UnixNano(), 10) + ":" + c.id))
}

func parseListCursor(s string) (*listCursor, error) {
	if s == "" {
		return nil, nil
	}
	bad := errors.New("cursor is not one this server gave out (next_cursor): list again from the first page")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	ns, id, ok := strings.Cut(string(raw), ":")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || recorder.CheckSessionID(id) != nil {
		return nil, bad
	}
	return &listCursor{start: time.Unix(0, n).UTC(), id: id}, nil
}

// listPage returns the page of f (f.Limit sessions) after cur, and the
// cursor of the next page ("" when this is the last).
func (s *Server) listPage(ctx context.Context, f store.ListFilter, cur *listCursor) ([]store.Record, string, error) {
	want := f.Limit
	if want <= 0 {
		want = 100
	}
	ff := f
	if cur != nil {
		until := cur.start.Add(time.Nanosecond)
		if ff.Until.IsZero() || until.Before(ff.Until) {
			ff.Until = until
		}
	}
	// Ask for one more than the page to know whether another follows, plus
	// the sessions at the cursor's moment that the last page showed.
	for skip := 0; ; {
		ff.Limit = want + 1 + skip
		recs, err := s.st.List(ctx, ff)
		if err != nil {
			return nil, "", err
		}
		d := 0
		if cur != nil {
			for d < len(recs) && recs[d].Start.Equal(cur.start) && recs[d].ID <= cur.id {
				d++
			}
		}
		page := recs[d:]
		switch {
		case len(page) > want:
			last := page[want-1]
			return page[:want], listCursor{start: last.Start, id: last.ID}.String(), nil
		case len(recs) < ff.Limit || d <= skip:
			return page, "", nil
		}
		skip = d
	}
}

// countMatches counts every session f matches, a page at a time.
func (s *Server) countMatches(ctx context.Context, f store.ListFilter) (int, error) {
	f.Limit = 1000
	n := 0
	var cur *listCursor
	for {
		page, next, err := s.listPage(ctx, f, cur)
		if err != nil {
			return 0, err
		}
		n += len(page)
		if next == "" {
			return n, nil
		}
		if cur, err = parseListCursor(next); err != nil {
			return 0, fmt.Errorf("playback: count sessions: %w", err)
		}
	}
}

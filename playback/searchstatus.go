package playback

import "fmt"

// withIndexStatus adds to the answer of a search (when searched is true)
// how many recordings are not searchable yet: while the search index
// catches up after a start (an index of an older format is rebuilt from
// the casts in the background) or retries writes that failed, a search
// says so instead of looking complete.
//
//	"index_pending": 120, "index_note": "not indexed yet, so not searched: 120 recordings; …"
func (s *Server) withIndexStatus(searched bool, resp map[string]any) map[string]any {
	if !searched {
		return resp
	}
	st := s.st.IndexStatus()
	switch {
	case !st.Scanned:
		resp["index_pending"] = st.Pending
		resp["index_note"] = "the search index is still being checked after a start: recordings not indexed yet are not searched; search again shortly"
	case st.Pending > 0:
		resp["index_pending"] = st.Pending
		resp["index_note"] = fmt.Sprintf("not indexed yet, so not searched: %d recordings; search again shortly", st.Pending)
	}
	return resp
}

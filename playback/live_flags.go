package playback

import (
	"context"
	"slices"
	"strings"

	"github.com/sshward/sshward/playback/store"
)

// flagMarkerPrefix starts the label of a suspicious-activity flag marker
// (agent.FlagMarkerPrefix; playback needs only the recorder format).
const flagMarkerPrefix = "flag "

// maxLiveScan bounds the live recordings the flagged filter inspects.
const maxLiveScan = 1000

// flaggedLive returns, with the rules raised, the live recordings whose markers, as indexed so
// far, hold a flag: a finished recording says so in its metadata
// (Metadata.Flags), a live one only in its markers.
func (s *Server) flaggedLive(ctx context.Context) (map[string][]string, error) {
	live, err := s.st.List(ctx, store.ListFilter{Live: true, Limit: maxLiveScan})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, r := range live {
		ms, err := s.st.Markers(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			rest, ok := strings.CutPrefix(m.Label, flagMarkerPrefix)
			if !ok {
				continue
			}
			rule, _, _ := strings.Cut(rest, ":")
			if !slices.Contains(out[r.ID], rule) && len(out[r.ID]) < 100 {
				out[r.ID] = append(out[r.ID], rule)
			}
		}
	}
	return out, nil
}

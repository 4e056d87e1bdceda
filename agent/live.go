package agent

import "time"

// Live following (issue 13 §1): what a session prints reaches an auditor
// who follows it within a fraction of a second. The recording's path is
// spool file → shipper → playback → the follower's open stream (pushed,
// not polled, from there on); these bound the first two hops. An idle
// recording costs nothing at either (the flusher writes only buffered
// bytes, the shipper sends only what the file has beyond what playback
// holds); a busy one is written and shipped a few times a second.
const (
	// liveFlushInterval is how often the spool writes live recordings'
	// buffers to their files (recorder.SpoolConfig.FlushInterval).
	liveFlushInterval = 200 * time.Millisecond
	// liveShipInterval is how often the shipper looks for new bytes
	// (recorder.ShipperConfig.PollInterval).
	liveShipInterval = 250 * time.Millisecond
)

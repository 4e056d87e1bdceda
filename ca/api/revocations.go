package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Revocations reach hosts by push (DESIGN.md "Trust invariants"):
//
//	GET /v1/host/revocations/watch?tier=T&since=N
//
// authenticated like every host route (hostauth, tier = the host's tier)
// or, for a playback server, by its TLS client certificate from the CA's
// root (tier = HostsScope: revoked host certificates). The answer is a
// stream of newline-delimited JSON RevocationEvents that lasts as long as
// the connection: first a hello (with the heartbeat interval); then a
// snapshot (the whole list, when since is 0 or ahead of the CA's log), or
// the revoke events after since; then each revocation as the CA commits
// it, and a heartbeat every interval, so that a dead connection is
// noticed within a few intervals. Every event carries the log position
// (Seq) the watcher has seen up to: pass the last one as since when
// reconnecting, and nothing committed in between is lost, even across a
// CA restart.
const PathHostRevocationsWatch = "/v1/host/revocations/watch"

// HostsScope is the watch "tier" of revoked host certificates (what a
// playback server refuses uploads from).
const HostsScope = "@hosts"

// Revocation event types.
const (
	EventHello     = "hello"
	EventSnapshot  = "snapshot"
	EventRevoke    = "revoke"
	EventHeartbeat = "heartbeat"
)

// MaxRevocationEventBytes bounds one line of the stream (a snapshot holds
// the whole list).
const MaxRevocationEventBytes = 32 << 20

// RevocationEvent is one line of the revocation stream.
type RevocationEvent struct {
	Type string `json:"type"`
	// Seq is the revocation log position the watcher has now seen
	// everything up to (for a revoke: that revocation's own).
	Seq uint64 `json:"seq"`
	// Tier, Serial, KeyID, At: a revoke (Serial 0 revokes by KeyID).
	Tier   string    `json:"tier,omitempty"`
	Serial uint64    `json:"serial,omitempty"`
	KeyID  string    `json:"key_id,omitempty"`
	At     time.Time `json:"at,omitzero"`
	// Notice, on a revoke, is what the holder of a live session reads when
	// it ends (e.g. OnCallEndedMessage); empty for a plain revocation.
	Notice string `json:"notice,omitzero"`
	// Heartbeat is the heartbeat interval (hello).
	Heartbeat Duration `json:"heartbeat,omitzero"`
	// List is the whole list (snapshot); its Seq equals the event's.
	List *RevocationList `json:"list,omitempty"`
	// Flags, on a hello to an agent, are its tier's flag rules (flags.go).
	Flags *FlagRuleSet `json:"flags,omitempty"`
	// Terminate is the order of an EventTerminate (terminate.go).
	Terminate *TerminateOrder `json:"terminate,omitempty"`
	// Trust, on a hello or an EventTrust, is what the agent's tier
	// trusts now (rotate.go).
	Trust *HostTrust `json:"trust,omitempty"`
}

// Check validates an event as a watcher receives it.
func (e *RevocationEvent) Check() error {
	switch e.Type {
	case EventHello:
		if e.Heartbeat < 0 {
			return errors.New("hello: negative heartbeat")
		}
	case EventHeartbeat:
	case EventSnapshot:
		if e.List == nil {
			return errors.New("snapshot without a list")
		}
		if e.List.Seq != e.Seq {
			return fmt.Errorf("snapshot list is at %d, the event at %d", e.List.Seq, e.Seq)
		}
	case EventRevoke:
		switch {
		case e.Tier == "":
			return errors.New("revoke without a tier")
		case e.Serial == 0 && e.KeyID == "":
			return errors.New("revoke without a serial or key id")
		case e.Seq == 0:
			return errors.New("revoke without a sequence number")
		}
	case EventTerminate:
		return e.Terminate.check()
	case EventTrust:
		if e.Trust == nil || len(e.Trust.UserCA) == 0 {
			return errors.New("trust event without keys")
		}
	default:
		return fmt.Errorf("unknown event type %q", e.Type)
	}
	return nil
}

// DecodeRevocationEvent parses and checks one line of the stream.
func DecodeRevocationEvent(line []byte) (RevocationEvent, error) {
	var e RevocationEvent
	if len(line) > MaxRevocationEventBytes {
		return e, errors.New("revocation event too long")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&e); err != nil {
		return RevocationEvent{}, fmt.Errorf("revocation event: %w", err)
	}
	if dec.More() {
		return RevocationEvent{}, errors.New("revocation event: trailing data")
	}
	if err := e.Check(); err != nil {
		return RevocationEvent{}, fmt.Errorf("revocation event: %w", err)
	}
	return e, nil
}

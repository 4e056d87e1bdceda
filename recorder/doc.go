// Package recorder writes and reads terminal sessions as asciicast v2 and
// keeps them in a local, crash-safe spool until they are shipped.
//
// The format is asciicast v2
// (https://docs.asciinema.org/manual/asciicast/v2/): a JSON header line,
// then one JSON array per event, [time, code, data], time in seconds since
// the start. Codes: "o" output, "i" input, "r" resize ("COLSxROWS"), "m"
// marker; the Reader also accepts "x" (exit, from asciicast v3). Version 2
// because Debian's asciinema 2.2 refuses v3 while asciinema-player 3 plays
// both. Writer and Reader are pure: no logging, no files.
//
// Writing rules that keep every player happy: whole lines only, each written
// with one Write call; UTF-8 split across reads is carried to the next call
// (JSON cannot hold half a rune); bytes that can never be UTF-8 become
// U+FFFD; no blank lines (asciinema 2.2 crashes on them).
//
// # Happy path (the host agent)
//
//	spool, err := recorder.OpenSpool(ctx, recorder.SpoolConfig{Dir: dataDir + "/spool", Logger: log})
//	// … repairs what a crash left open, starts one flusher goroutine
//	defer spool.Close()
//
//	rec, err := spool.Create(ctx, recorder.Metadata{
//		SessionID: id, Identity: "alice", Principal: "root", KeyID: cert.KeyId,
//		Serial: cert.Serial, Tier: "production", Host: host, ClientAddr: addr,
//		Kind: recorder.KindShell, RecordInput: true,
//	}, recorder.Header{Width: 80, Height: 24, Env: map[string]string{"TERM": term, "SHELL": shell}})
//	// Create wrote the header and the "session start user=alice …" marker.
//
//	rec.Output(buf[:n])     // from the PTY (or stdout and stderr of an exec)
//	rec.Input(typed)        // a no-op unless RecordInput
//	rec.Resize(cols, rows)  // on every window-change
//	if err := rec.Commit(); err != nil { /* closed tier: commit before showing output */ }
//	if err := rec.Err(); err != nil { /* tier rule: closed → end the session; open → alert */ }
//
//	meta, err := rec.Close(ctx, recorder.EndInfo{ExitStatus: &status})
//	// "session end status=0" marker, fsync, sha256, metadata with Finished=true.
//
// Beside it the agent runs a Shipper (ship.go), which streams every
// recording to the playback server while it is recorded and removes it
// from the spool only once the server acknowledged all of it:
//
//	sh, err := recorder.NewShipper(recorder.ShipperConfig{Spool: spool,
//		URL: playbackURL, RootPEM: caRoot, Cert: hostIdentity, Logger: log})
//	go sh.Run(ctx)     // retries with backoff; survives restarts of either side
//	sh.Status()        // the upload queue; also in DIR/.ship-status.json (ReadShipStatus)
//
// The ingest protocol and the recording signature are in ingest.go.
//
// # Secrets
//
// Output and input pass through a Redaction (redact.go) before they are
// encoded: matches of its patterns (SpoolConfig.Redaction, default
// DefaultRedactPatterns: private key blocks, AWS, GitHub, Slack and bearer
// tokens) become "[REDACTED:name]", also when a secret spans reads.
// Leaving out input typed with terminal echo off is the agent's job (it
// owns the terminal).
//
// # Files
//
// DIR/<session_id>.cast is the asciicast, 0600, append-only, flushed every
// SpoolConfig.FlushInterval (1 s) and fsynced at Close. DIR/<session_id>.json
// is the Metadata, replaced atomically. After kill -9 the next OpenSpool cuts
// each open cast back to its last '\n' and marks it Complete=false; every
// line flushed before the crash stays.
//
// With SpoolConfig.Recipients the cast is sealed instead (sealed.go): age
// frames to the playback server's recipients, DIR/<session_id>.cast.state
// beside it, and no side blob; the spool can then not read its own casts,
// and repairs, digests and ships them from the state records.
package recorder

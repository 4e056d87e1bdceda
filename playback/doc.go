// Package playback is the sshward playback server (DESIGN.md "Playback"):
// it receives recordings from host agents while their sessions run, keeps
// them (playback/store), and lets auditors list, search, watch and export
// them, through a JSON API, the web UI (playback/web) and the sshward CLI.
// The API contract is notes/playback-api.md.
//
// Trust. The server joins the CA once with a one-time token (Join): the CA
// issues its TLS certificate from the internal root, so agents and clients
// verify it with the root they already pin, and registers its URL so that
// `sshward sessions` finds it. Agents authenticate every ingest request with
// their SSH host certificate (ca/hostauth) from the CA's host CA; readers
// with a CA session (Bearer token or the web UI's cookie), checked with the
// CA and cached for 30 s; only the group "auditors" reads anything. Every
// view, export and search is an event of the server's own hash-chained
// audit log, as is every recording accepted (with its digest) and every
// deletion by retention.
//
// Happy path (what cmd/sshward-playback does):
//
//	id, err := playback.EnsureIdentity(ctx, playback.JoinConfig{Dir: dir, CAURL: caURL,
//		Fingerprint: fp, Token: token, URL: "https://playback.example.com:8444"}, time.Now())
//	settings, err := playback.LoadSettings(dir)                 // DIR/config.yaml: retention per tier
//	st, err := store.Open(ctx, store.Config{Dir: dir})
//	ca, err := playback.NewCAClient(id.CAURL, id.RootPEM)
//	srv, err := playback.New(playback.Config{Store: st, CA: ca, HostCAs: id.HostCAs,
//		SetHostCAs: id.SetHostCAs, TLS: id.TLSConfig(), Retention: settings.Retention, UI: ui})
//	err = srv.Serve(ctx, ln)
//
// Ingest (agents; recorder.Shipper is the client):
//
//	POST /v1/ingest/{id}/start          recorder.Metadata     -> {"stored": N}
//	PUT  /v1/ingest/{id}/chunk?offset=N whole asciicast lines -> {"stored": M} once fsynced; 409 {"stored"}; 422
//	POST /v1/ingest/{id}/finish         {metadata, signature} -> 200; 422 (discarded: ship again)
//
// Readers (group auditors):
//
//	POST /api/login, POST /api/logout
//	GET  /api/sessions?user=&host=&tier=&since=&until=&break_glass=1&live=1&flagged=1&q=&limit=&cursor=&count=1
//	                                   {"sessions": [...], "next_cursor": "…" (more match), "total": N (count=1)}
//	GET  /api/sessions/{id}            metadata, integrity re-checked, markers
//	GET  /api/sessions/{id}/cast       asciicast v2; ?follow=1 follows a live session; ?offset=N
//	                                   resumes from byte N (X-Sshward-Offset: N says it did)
//	GET  /api/sessions/{id}/export     the same bytes as an attachment
//	GET  /api/sessions/{id}/commands   the command timeline (recorder.Commands)
//	POST /api/sessions/{id}/terminate  {"reason", "lock_user"}: end a live session (through the CA)
//	GET  /api/search?q=&limit=         hits with session and time offset
//	GET  /api/audit                    the server's audit log, with its chain verified
package playback

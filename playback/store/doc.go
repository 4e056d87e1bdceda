// Package store keeps the playback server's recordings: each cast as a file
// under DIR/blobs (appended chunk by chunk, fsynced before a chunk is
// acknowledged) with its metadata JSON beside it, a bbolt index
// (DIR/index.db) of sessions and the server's own hash-chained audit log,
// and a bbolt search index (DIR/search.db) of their text.
//
// Layout of DIR:
//
//	blobs/<session_id>.cast   the asciicast v2 as shipped, 0600, appended by chunks
//	blobs/<session_id>.json   the host's final metadata (recorder.Metadata), written at finish
//	index.db                  bbolt: sessions, audit log
//	search.db                 bbolt: text index (segments, segment.go), markers
//
// The search index is smaller than the casts it indexes (about half on
// realistic shell sessions, TestIndexSmallerThanCasts) and is not read at
// start: Open reads the meta and freelist pages of both files only, and the
// indexer catches up in the background with whatever a crash, a full disk
// or an index of an older format (text.db, removed) left behind; Search
// answers meanwhile for what is indexed, and IndexStatus says how much is
// not. A failed index write (a full disk) is retried by itself, with
// backoff, until it succeeds.
//
// Durability: Append writes a chunk and fsyncs the cast before it returns,
// so an acknowledged byte survives a crash. A crash in the middle of a
// chunk leaves at most part of a line past the last acknowledged one; the
// next load cuts it off. Start, Finish and Delete are transactions of the
// index (fsynced by bbolt).
//
// Happy path of the ingest side (the playback server's handlers):
//
//	st, _ := store.Open(ctx, store.Config{Dir: dir})
//	stored, _ := st.Start(ctx, store.StartRequest{ID: id, Owner: host, Meta: meta})
//	stored, _ = st.Append(ctx, id, host, stored, chunk)   // whole lines, fsynced
//	rec, _ := st.Finish(ctx, store.FinishRequest{ID: id, Owner: host, Meta: final, Signature: sig, Verify: check})
//
// and of the read side:
//
//	recs, _ := st.List(ctx, store.ListFilter{Tier: "production"})
//	hits, _ := st.Search(ctx, store.Query{Text: "rm -rf"})
//	cs, changed, _ := st.Cast(id)  // committed size; changed closes when it grows
//	f, _ := st.OpenCast(id)        // read at most cs.Size bytes
package store

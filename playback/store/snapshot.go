package store

import "strings"

// IndexFile is the name of the store's index (records and audit chain) in
// its directory: a backup holds no store without it.
const IndexFile = indexDB

// Owns reports whether rel (slash-separated, relative to the store's
// directory) is the store's, which Backup copies: the database files and
// the recordings' files under blobs/. The rest of a server directory
// (identity, configuration) is its caller's to copy.
func Owns(rel string) bool {
	return rel == indexDB || rel == searchDB || rel == legacyTextDB || rel == "blobs" || strings.HasPrefix(rel, "blobs/")
}

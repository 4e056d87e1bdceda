package store

import "fmt"

// GetJoinToken returns a join token by id without consuming it (ErrNotFound
// when absent). The CA reads it to check kind and tier before it signs;
// ConsumeJoinToken in the write transaction stays the authority.
func (tx *Tx) GetJoinToken(id string) (*JoinToken, error) {
	const op = "get join token"
	b := tx.bucket(bucketTokens)
	if b == nil {
		return nil, fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	t := new(JoinToken)
	found, err := getJSON(b, []byte(id), t)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	if !found {
		return nil, fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	return t, nil
}

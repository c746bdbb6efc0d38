package boltfile

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// maxTreeErrors bounds how many of tx.Check's findings CheckTrees reports.
const maxTreeErrors = 10

// CheckTrees runs bbolt's own consistency walk on tx (tx.Check): every
// page reachable from the root bucket, each referenced once and below the
// high-water mark, every page below it either reachable or free, the keys
// of every page in order and within their parent's bounds. It reports up
// to ten findings, with their count.
//
// tx.Check reads the pages on a goroutine of bbolt's, where a fault on a
// damaged page is not turned into a panic: run it on a file whose pages
// have been read once under debug.SetPanicOnFault first.
func CheckTrees(tx *bolt.Tx) error {
	var errs []error
	n := 0
	for err := range tx.Check() {
		if n++; n <= maxTreeErrors {
			errs = append(errs, err)
		}
	}
	if n > maxTreeErrors {
		errs = append(errs, fmt.Errorf("and %d more", n-maxTreeErrors))
	}
	if n > 0 {
		return fmt.Errorf("bbolt's consistency check: %w", errors.Join(errs...))
	}
	return nil
}

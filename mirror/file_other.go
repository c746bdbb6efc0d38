//go:build !linux

package mirror

// File operations that differ by platform: free space for NoSpaceError.

// freeBytes is unknown here: -1.
func freeBytes(string) int64 { return -1 }

//go:build !unix

package deb

const noFollow = 0

package deb

// Tree is tree for the external tests in package deb_test.
var Tree = tree

package kmod

// Names is names for the external tests in package kmod_test.
var Names = names

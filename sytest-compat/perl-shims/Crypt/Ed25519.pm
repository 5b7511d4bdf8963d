# A stand-in for CPAN's Crypt::Ed25519, which Debian does not package, over
# CryptX's Crypt::PK::Ed25519 (Debian: libcryptx-perl). It covers what SyTest
# calls: the eddsa_* functions and verify. Keys are raw 32-byte strings, the
# secret key being the 32-byte seed, signatures raw 64-byte strings.
package Crypt::Ed25519;

use strict;
use warnings;

use Crypt::PK::Ed25519;
use Crypt::PRNG qw( random_bytes );

our $VERSION = '1.04';

sub eddsa_secret_key { return random_bytes(32) }

sub eddsa_public_key {
   my ( $secret ) = @_;
   return Crypt::PK::Ed25519->new->import_key_raw( $secret, 'private' )->export_key_raw('public');
}

sub eddsa_sign {
   my ( $message, $public_key, $secret ) = @_;
   return Crypt::PK::Ed25519->new->import_key_raw( $secret, 'private' )->sign_message($message);
}

sub eddsa_verify {
   my ( $message, $public_key, $signature ) = @_;
   return 0 unless defined $public_key and length($public_key) == 32;
   return 0 unless defined $signature and length($signature) >= 64;
   my $pk = eval { Crypt::PK::Ed25519->new->import_key_raw( $public_key, 'public' ) } or return 0;
   return $pk->verify_message( substr( $signature, 0, 64 ), $message ) ? 1 : 0;
}

*verify = \&eddsa_verify;

1;

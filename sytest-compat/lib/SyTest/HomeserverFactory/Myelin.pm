# SyTest homeserver factory for Myelin: `run-tests.pl -I Myelin`.
#
# SyTest finds this module through SYTEST_PLUGINS (a directory holding one
# directory per plugin, each with a lib/); sytest-compat/run.sh sets that up.

use strict;
use warnings;

require SyTest::Homeserver::Myelin;

package SyTest::HomeserverFactory::Myelin;
use base qw( SyTest::HomeserverFactory );

sub _init
{
   my $self = shift;

   $self->{args} = {
      binary       => $ENV{MYELIN_BINARY} // "myelin",
      room_version => $ENV{MYELIN_SYTEST_ROOM_VERSION} // "10",
   };

   $self->SUPER::_init( @_ );
}

sub implementation_name
{
   return "myelin";
}

sub get_options
{
   my $self = shift;

   return (
      'myelin-binary=s'       => \$self->{args}{binary},
      'myelin-room-version=s' => \$self->{args}{room_version},
      $self->SUPER::get_options(),
   );
}

sub print_usage
{
   print STDERR <<'USAGE';
       --myelin-binary PATH        - the myelin executable (default: $MYELIN_BINARY,
                                     else `myelin` on PATH)
       --myelin-room-version VER   - default version of new rooms (default 10;
                                     SyTest's federation peers know versions 1-11)
USAGE
}

sub create_server
{
   my $self = shift;
   my %params = ( @_, %{ $self->{args} } );

   return SyTest::Homeserver::Myelin->new( %params );
}

1;

# One Myelin server under SyTest.
#
# Each server gets two loopback ports: the client-server API (plain HTTP, as
# Myelin serves it today) and the server-server API (HTTPS, with a certificate
# for the bind host signed by SyTest's own CA, keys/ca.crt). Its server name is
# `<bind host>:<federation port>`, since SyTest serves no .well-known. Every
# start wipes the server's data: a fresh config, keys and database.

use strict;
use warnings;

package SyTest::Homeserver::Myelin;
use base qw( SyTest::Homeserver SyTest::Homeserver::ProcessManager );

use Carp;
use Cwd qw( abs_path );
use File::Path qw( remove_tree make_path );
use Future;

use SyTest::SSL qw( ensure_ssl_key create_ssl_cert );

sub _init
{
   my $self = shift;
   my ( $args ) = @_;

   $self->{$_} = delete $args->{$_} for qw( binary room_version );
   defined $self->{binary} or croak "Need a myelin binary";

   $self->SUPER::_init( $args );

   my $idx = $self->{hs_index};
   $self->{ports} = {
      client     => main::alloc_port( "myelin[$idx].client" ),
      federation => main::alloc_port( "myelin[$idx].federation" ),
   };
}

sub server_name
{
   my $self = shift;
   return $self->{bind_host} . ":" . $self->{ports}{federation};
}

sub federation_host
{
   my $self = shift;
   return $self->{bind_host};
}

sub federation_port
{
   my $self = shift;
   return $self->{ports}{federation};
}

sub secure_port
{
   my $self = shift;
   return $self->{ports}{federation};
}

sub unsecure_port
{
   my $self = shift;
   return $self->{ports}{client};
}

sub public_baseurl
{
   my $self = shift;
   return "http://$self->{bind_host}:$self->{ports}{client}";
}

# Myelin binds numeric addresses; SyTest's bind host is usually `localhost`.
sub _listen_host
{
   my $self = shift;
   my $host = $self->{bind_host};
   return $host eq "localhost" ? "127.0.0.1" : $host;
}

sub start
{
   my $self = shift;

   my $hs_dir = $self->{hs_dir};
   my $data_dir = "$hs_dir/data";
   my $output = $self->{output};

   # Fresh data on each start.
   remove_tree( $data_dir );
   make_path( $data_dir );

   system( $self->{binary}, "generate-config",
      "--server-name", $self->server_name,
      "--dir", $data_dir,
   ) == 0 or return Future->fail( "myelin generate-config failed: $?" );

   # A certificate from SyTest's CA instead of the self-signed one. SyTest
   # runs from its checkout, where keys/ca.crt and keys/ca.key are.
   my $cert = "$data_dir/sytest-tls.crt";
   my $key = "$data_dir/sytest-tls.key";
   ensure_ssl_key( $key );
   create_ssl_cert( $cert, $key, $self->{bind_host} );

   my $listen = $self->_listen_host;
   my %env = (
      MYELIN_GLOBAL__SERVER_NAME                    => $self->server_name,
      MYELIN_CLIENT_API__LISTEN                     => "$listen:$self->{ports}{client}",
      MYELIN_CLIENT_API__REGISTRATION_SHARED_SECRET => "reg_secret",
      MYELIN_CLIENT_API__OPEN_REGISTRATION          => "true",
      MYELIN_FEDERATION_API__LISTEN                 => "$listen:$self->{ports}{federation}",
      MYELIN_FEDERATION_API__TLS_CERTIFICATE_PATH   => $cert,
      MYELIN_FEDERATION_API__TLS_PRIVATE_KEY_PATH   => $key,
      MYELIN_ROOMSERVER__DEFAULT_ROOM_VERSION       => $self->{room_version},
      # SyTest's own federation peers listen on loopback, with certificates
      # from its CA.
      MYELIN_FEDERATION_API__ALLOW_LOOPBACK_PEERS   => "true",
      MYELIN_FEDERATION_API__CA_FILE                => abs_path( "keys/ca.crt" ),
   );
   $env{MYELIN_GLOBAL__LOG_FILTER} = $ENV{MYELIN_SYTEST_LOG}
      if defined $ENV{MYELIN_SYTEST_LOG};

   my $idx = $self->{hs_index};
   my $log = "$hs_dir/myelin.log";
   $output->diag( "Starting myelin-$idx, logging to $log" );

   # The server's output goes to its log file, keeping it out of the TAP.
   my @command = (
      "sh", "-c", 'exec "$@" >>"$MYELIN_SYTEST_LOGFILE" 2>&1', "myelin",
      $self->{binary}, "run", "--config", "$data_dir/myelin.yaml",
   );

   return $self->_start_process_and_await_connectable(
      setup        => [ env => { %ENV, %env, MYELIN_SYTEST_LOGFILE => $log } ],
      command      => \@command,
      connect_host => $listen,
      connect_port => $self->{ports}{client},
      name         => "myelin-$idx",
   )->then( sub {
      $self->await_connectable( $listen, $self->{ports}{federation} );
   })->else( sub {
      die "Unable to start myelin-$idx (see $log): $_[0]\n";
   })->on_done( sub {
      $output->diag( "Started myelin-$idx" );
   });
}

1;

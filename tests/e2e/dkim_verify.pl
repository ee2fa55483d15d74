#!/usr/bin/perl
# An independent DKIM verifier for the e2e tests: Perl's Mail::DKIM (not dkimpy), asking the
# lab's dnsmasq on 127.0.0.1:PORT for the keys. Reads a message on stdin; prints one line
# "result domain selector" per signature; exits 0 when at least one signature passes.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS;

my $port = shift @ARGV or die "usage: dkim_verify.pl DNS_PORT < message\n";
my $resolver = Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $port,
                                       recurse => 1, udp_timeout => 5, tcp_timeout => 5, retry => 1);
Mail::DKIM::DNS::resolver($resolver);
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (<STDIN>) {
    s/\r?\n\z/\015\012/;
    $dkim->PRINT($_);
}
$dkim->CLOSE;
my $passed = 0;
foreach my $signature ($dkim->signatures) {
    printf "%s %s %s\n", $signature->result, $signature->domain, $signature->selector;
    $passed = 1 if $signature->result eq 'pass';
}
exit($passed ? 0 : 1);

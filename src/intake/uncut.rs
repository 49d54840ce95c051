//! Connections that tell a cut from an end. ureq takes a TLS stream that
//! stops without close_notify, or a reset, for the end of a body sent with
//! no length, so a FIN forged on the path could cut the control file short
//! (`open ssh from 203.0.113.7` read as `open ssh`). Only the server can say
//! close_notify; anything else that ends the stream is an error here.

use std::io;

use ureq::Error;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Wraps each connection ureq's own connectors made in an [`Uncut`].
#[derive(Debug)]
pub struct EndOnlyWhenSaid;

impl Connector<Box<dyn Transport>> for EndOnlyWhenSaid {
    type Out = Uncut;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<Uncut>, Error> {
        Ok(chained.map(Uncut))
    }
}

/// A connection whose end without close_notify is an error.
#[derive(Debug)]
pub struct Uncut(Box<dyn Transport>);

impl Transport for Uncut {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.0.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        self.0.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.0.await_input(timeout).map_err(|error| match error {
            Error::Io(error) if cut(&error) => Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "the connection was cut before the server ended its answer (no TLS \
                 close_notify): what came may be part of the file",
            )),
            other => other,
        })
    }

    fn is_open(&mut self) -> bool {
        self.0.is_open()
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}

/// Whether `error` ended the stream without the server saying so: rustls
/// reports a missing close_notify as an unexpected end.
fn cut(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

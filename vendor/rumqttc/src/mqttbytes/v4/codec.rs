use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Error, OversizedPublish, Packet};
use crate::mqttbytes::{parse_fixed_header, PacketType};

/// MQTT v4 codec
///
/// An incoming PUBLISH over `max_incoming_size` is not an error (fbp patch):
/// the codec yields its head as [`Packet::OversizedPublish`] and reads past
/// its payload as it arrives, without buffering it, so memory stays bounded
/// by the limit and the connection goes on. Any other packet over the limit
/// is an error, as before.
#[derive(Debug, Clone)]
pub struct Codec {
    /// Maximum packet size allowed by client
    pub max_incoming_size: usize,
    /// Maximum packet size allowed by broker
    pub max_outgoing_size: usize,
    /// Bytes of an oversized payload still to read past.
    skip: usize,
}

impl Codec {
    pub fn new(max_incoming_size: usize, max_outgoing_size: usize) -> Codec {
        Codec {
            max_incoming_size,
            max_outgoing_size,
            skip: 0,
        }
    }

    /// Drops what `src` holds of an oversized payload; whether it is all gone.
    fn read_past(&mut self, src: &mut BytesMut) -> bool {
        let n = self.skip.min(src.len());
        src.advance(n);
        self.skip -= n;
        self.skip == 0
    }

    /// The packet at the front of `src` is over the limit: the head of a
    /// PUBLISH (its payload then read past), or the error for any other.
    fn oversized(&mut self, src: &mut BytesMut, size: usize) -> Result<Option<Packet>, Error> {
        let fixed_header = parse_fixed_header(src.iter())?;
        if fixed_header.packet_type()? != PacketType::Publish {
            return Err(Error::PayloadSizeLimitExceeded(size));
        }
        match OversizedPublish::read_head(fixed_header, src) {
            Ok(head) => {
                self.skip = head.payload_size;
                self.read_past(src);
                Ok(Some(Packet::OversizedPublish(head)))
            }
            Err(Error::InsufficientBytes(b)) => {
                src.reserve(b);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Decoder for Codec {
    type Item = Packet;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if !self.read_past(src) {
            return Ok(None);
        }
        match Packet::read(src, self.max_incoming_size) {
            Ok(packet) => Ok(Some(packet)),
            Err(Error::InsufficientBytes(b)) => {
                // Get more packets to construct the incomplete packet
                src.reserve(b);
                Ok(None)
            }
            Err(Error::PayloadSizeLimitExceeded(size)) => self.oversized(src, size),
            Err(e) => Err(e),
        }
    }
}

impl Encoder<Packet> for Codec {
    type Error = Error;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.write(dst, self.max_outgoing_size)?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    use super::Codec;
    use crate::{mqttbytes::Error, Packet, Publish, QoS};

    #[test]
    fn outgoing_max_packet_size_check() {
        let mut buf = BytesMut::new();
        let mut codec = Codec::new(100, 200);

        let mut small_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 100]);
        small_publish.pkid = 1;
        codec
            .encode(Packet::Publish(small_publish), &mut buf)
            .unwrap();

        let large_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 265]);
        match codec.encode(Packet::Publish(large_publish), &mut buf) {
            Err(Error::OutgoingPacketTooLarge {
                pkt_size: 281,
                max: 200,
            }) => {}
            _ => unreachable!(),
        }
    }
}
